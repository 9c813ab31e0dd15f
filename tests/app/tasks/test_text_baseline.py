"""``examples.text_baseline`` runs on the text task's own split and scores a second file."""

from __future__ import annotations

import csv
import random

import pytest

pytest.importorskip("sklearn")
text_baseline = pytest.importorskip("examples.text_baseline")


def write_comments(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["comment_text", "toxic", "insult"])
        for _ in range(count):
            toxic, insult = rng.random() < 0.4, rng.random() < 0.3
            words = [rng.choice(["page", "edit", "talk", "link"]) for _ in range(8)]
            writer.writerow([" ".join(words + ["grr"] * toxic + ["bah"] * insult),
                             int(toxic), int(insult)])
    return path


def test_baseline_scores_the_task_split_and_an_unseen_file(tmp_path, capsys):
    data = write_comments(tmp_path / "train.csv", 200, 0)
    unseen = write_comments(tmp_path / "unseen.csv", 50, 1)
    report = text_baseline.main(["--data", str(data), "--seed", "3", "--test", str(unseen)])
    assert report["val_rows"] == 20 and report["test"]["rows"] == 50
    assert report["mean_roc_auc"] > 0.9 and report["test"]["mean_roc_auc"] > 0.9
    assert "toxic" in capsys.readouterr().out
