"""A text run folder stays small (the wide path stored as its rows) and resumes bit-identically."""

from __future__ import annotations

import csv
import random

import pytest
import torch

pytest.importorskip("tokenizers")

from gradclip.app.cli import main, parse  # noqa: E402
from gradclip.app.commands import options  # noqa: E402
from gradclip.app.training.checkpoint import CHECKPOINT, load_checkpoint  # noqa: E402
from gradclip.app.training.compact import ROWS_MARK  # noqa: E402
from gradclip.app.training.loggers import MetricsLogger, StepLogger  # noqa: E402
from gradclip.app.training.metrics_log import read_metrics  # noqa: E402
from gradclip.app.training.runs import create_run  # noqa: E402
from gradclip.app.training.trainer import Trainer  # noqa: E402

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
WORDS = ["page", "edit", "article", "source", "thanks", "please", "talk", "grr", "bah", "meh"]
FOLDER_LIMIT = 40 * 2**20


def jigsaw_like(path, rows=200, seed=0):
    """Harmless comments in the Jigsaw train.csv layout: id, comment_text, six 0/1 labels."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "comment_text", *LABELS])
        for index in range(rows):
            words = [rng.choice(WORDS) + str(rng.randrange(400)) for _ in range(rng.randint(3, 30))]
            writer.writerow([f"c{index}", " ".join(words),
                             *(int(rng.random() < 0.3) for _ in LABELS)])
    return path


def train_args(data, out, steps=8):
    # the default text model (wide path of 2**20 hashed features x 6 labels, AdamW)
    return ["train", "--task", "text", "--data", str(data), "--steps", str(steps),
            "--checkpoint-every", "4", "--threads", "1", "--progress", "never",
            "--out", str(out)]


def folder_bytes(folder):
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return jigsaw_like(tmp_path_factory.mktemp("jigsaw") / "train.csv")


class StopAfter(StepLogger):
    """Fails the run after ``step`` (a crash between two checkpoints)."""

    def __init__(self, step):
        self.step = step

    def log_step(self, record, model, health=None):
        if record["step"] == self.step:
            raise RuntimeError("crash")


def test_a_completed_text_run_folder_is_at_most_40_mb(data, tmp_path):
    assert main(train_args(data, tmp_path / "run")) == 0
    size = folder_bytes(tmp_path / "run")
    assert size <= FOLDER_LIMIT, f"{size / 2**20:.1f} MiB"
    final = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert final["optimizer"]["state"] == {}  # a finished run keeps no moments
    assert final["model"]["wide.weight"][ROWS_MARK] == 1


def test_a_text_run_crashed_between_checkpoints_resumes_bit_identically(data, tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    assert main(train_args(data, reference)) == 0
    with create_run(options.new_run(parse(train_args(data, crashed)))) as current:
        trainer = Trainer(current.run_dir, current.config, current.task)
        with pytest.raises(RuntimeError, match="crash"):
            trainer.train(loggers=[MetricsLogger(crashed), StopAfter(6)])
    middle = torch.load(crashed / CHECKPOINT, weights_only=True)
    assert middle["step"] == 4
    moments = middle["optimizer"]["state"]
    assert any(isinstance(value, dict) and ROWS_MARK in value
               for state in moments.values() for value in state.values())
    assert main(["train", "--resume", str(crashed), "--progress", "never"]) == 0
    expected, resumed = load_checkpoint(reference), load_checkpoint(crashed)
    assert resumed["step"] == expected["step"] == 8
    assert expected["model"].keys() == resumed["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert read_metrics(crashed) == read_metrics(reference)
