"""`python -m benchmarks.text_ablation` runs on a small CSV and records each path's scores."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("sklearn")


def write_comments(path, count=96):
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "comment_text", "toxic", "insult"])
        for index in range(count):
            toxic, insult = rng.random() < 0.4, rng.random() < 0.3
            words = [rng.choice(["page", "edit", "talk", "wiki"]) for _ in range(6)]
            words += ["grr"] * toxic + ["bah"] * insult
            writer.writerow([f"id{index}", " ".join(words), int(toxic), int(insult)])
    return path


def test_text_ablation_records_each_path_and_blend_per_epoch(tmp_path):
    data = write_comments(tmp_path / "first.csv")
    done = subprocess.run([sys.executable, "-m", "benchmarks.text_ablation", "--data", str(data),
                           "--out", str(tmp_path / "out"), "--epochs", "2", "--hidden", "4",
                           "--threads", "1", "--wide-bias-scale", "1"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[-1])
    assert len(record["history"]) == 2 and record["steps"] > 0
    assert {"deep", "wide", "wide+0.2*deep"} <= set(record["history"][-1])
    assert all(0 <= score <= 1 for score in record["history"][-1].values())
