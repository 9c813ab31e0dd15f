"""Resume is exact: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradclip.app.training.checkpoint import CHECKPOINT

# dropout (global RNG), a stateful clipper (AutoClip's history) and Adam state all must survive
TRAIN = ["train", "--task", "adding", "--seq-len", "10", "--model", "gru", "--layers", "2",
         "--hidden-size", "16", "--dropout", "0.2", "--clip", "autoclip:0.1", "--optimizer",
         "adam", "--lr", "0.01", "--schedule", "cosine", "--accumulate", "2", "--steps", "200",
         "--checkpoint-every", "20", "--log-every", "10", "--device", "cpu", "--seed", "7"]


def gradclip(*args: str | Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gradclip", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


def kill_after_first_checkpoint(run_dir: Path, train: list[str] = TRAIN) -> int:
    """Start the run ``train`` (argv), SIGKILL it as soon as a checkpoint exists; the
    checkpointed step."""
    process = gradclip(*train, "--out", run_dir)
    deadline = time.monotonic() + 120
    while not (run_dir / CHECKPOINT).exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return torch.load(run_dir / CHECKPOINT, weights_only=False)["step"]


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_run_killed_with_sigkill_and_resumed_ends_bit_identical(tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = gradclip(*TRAIN, "--out", uninterrupted)
    killed_at = kill_after_first_checkpoint(interrupted)
    assert killed_at < 200, "the run finished before it could be killed"
    finish(gradclip("train", "--resume", interrupted))
    finish(reference)

    expected = torch.load(uninterrupted / CHECKPOINT, weights_only=False)
    resumed = torch.load(interrupted / CHECKPOINT, weights_only=False)
    assert resumed["step"] == expected["step"] == 200
    assert expected["model"].keys() == resumed["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert resumed["clipper"].keys() == expected["clipper"].keys()
    assert metrics_lines(interrupted) == metrics_lines(uninterrupted)


def last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_metrics_logged_past_the_checkpoint_are_on_file_and_dropped_on_resume(tmp_path):
    """metrics.jsonl reaches the file every --log-every steps, ahead of the checkpoints; a
    run killed between two checkpoints keeps those rows until its resume drops them."""
    train = [*TRAIN[:TRAIN.index("--checkpoint-every")], "--checkpoint-every", "100",
             "--log-every", "10", "--device", "cpu", "--seed", "7"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = gradclip(*train, "--out", uninterrupted)
    process = gradclip(*train, "--out", interrupted)
    deadline = time.monotonic() + 120
    while last_logged_step(interrupted) <= 100 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpointed = torch.load(interrupted / CHECKPOINT, weights_only=False)["step"]
    assert checkpointed == 100, "the run finished before it could be killed"
    logged = [record["step"] for record in metrics_lines(interrupted)]
    assert logged[:100] == list(range(1, 101)) and logged[-1] > 100  # orphans, on file
    finish(gradclip("train", "--resume", interrupted))
    finish(reference)
    steps = [record["step"] for record in metrics_lines(interrupted)]
    assert steps == list(range(1, 201))  # no duplicate, no orphan
    assert metrics_lines(interrupted) == metrics_lines(uninterrupted)
