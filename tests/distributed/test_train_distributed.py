"""``torchrun --nproc_per_node 2 -m gradclip train --distributed ddp|fsdp``, for real.

Each run is a torchrun launch of two gloo processes in a subprocess (start-up dominates: the
runs are a few dozen steps of small models).
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.distributed.spawn import free_port

ADDING = ["--task", "adding", "--seq-len", "8", "--hidden-size", "16", "--batch-size", "16",
          "--lr", "0.05", "--clip", "norm:1.0", "--log-every", "5", "--progress", "never"]
# Crash the run hard (as SIGKILL would) on every rank right before optimizer step CRASH_AT.
CRASHING_LAUNCHER = """
import os, sys
from gradclip.app.cli import main
from gradclip.app.training.trainer import Trainer

train_one_step = Trainer.train_one_step

def crash_before(self, monitor=None):
    if self.counters.step == int(os.environ["CRASH_AT"]):
        os._exit(9)
    return train_one_step(self, monitor)

Trainer.train_one_step = crash_before
raise SystemExit(main(sys.argv[1:]))
"""


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args: str, program: list[str] | None = None, check: bool = True,
             **env: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 -m gradclip train ARGS``."""
    program = program or ["-m", "gradclip"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), *program, "train", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=environment(**env))
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def single_process(*args: str) -> None:
    command = [sys.executable, "-m", "gradclip", "train", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=environment())
    assert result.returncode == 0, result.stderr[-3000:]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    scratch = tmp_path_factory.mktemp("scratch")
    torchrun(*ADDING, "--steps", "30", "--out", str(run_dir), "--distributed", "ddp",
             TMPDIR=str(scratch))
    # the ranks other than 0 write nothing: no scratch run folder anywhere
    assert not list(scratch.glob("gradclip*"))
    assert sorted(path.name for path in run_dir.parent.iterdir()) == ["run"]
    return run_dir


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    torchrun(*ADDING, "--steps", "30", "--checkpoint-every", "10", "--out", str(run_dir),
             "--distributed", "fsdp")
    return run_dir


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_training_writes_one_run_directory_from_rank_0(ddp_run, fsdp_run, mode):
    run_dir = {"ddp": ddp_run, "fsdp": fsdp_run}[mode]
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert config["distributed"] == {"mode": mode, "world_size": 2}
    assert [record["step"] for record in metrics(run_dir)] == list(range(1, 31))
    assert "layer_grad_norms" in metrics(run_dir)[4]
    assert summary["status"] == "completed" and summary["step"] == 30


def test_ddp_training_matches_one_process_on_the_full_batch(ddp_run, tmp_path):
    single_process(*ADDING, "--steps", "30", "--out", str(tmp_path / "single"))
    expected = weights(tmp_path / "single")
    for name, tensor in weights(ddp_run).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-6)
    ddp_norms = [record["grad_norm"] for record in metrics(ddp_run)]
    single_norms = [record["grad_norm"] for record in metrics(tmp_path / "single")]
    assert ddp_norms == pytest.approx(single_norms, rel=1e-4)


def test_fsdp_and_ddp_train_the_same_weights(ddp_run, fsdp_run):
    expected = weights(ddp_run)
    for name, tensor in weights(fsdp_run).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-6)


def test_fsdp_checkpoint_keeps_one_sharded_dcp_folder_named_in_checkpoint_pt(fsdp_run):
    state = torch.load(fsdp_run / "checkpoint.pt", weights_only=False)
    assert sorted(p.name for p in fsdp_run.glob("sharded-*")) == [state["sharded"]]
    assert (fsdp_run / state["sharded"] / ".metadata").is_file()


def test_fsdp_run_resumed_after_a_crash_is_bit_identical_to_the_uninterrupted_run(
    fsdp_run, tmp_path
):
    run_dir = tmp_path / "crashed"
    launcher = tmp_path / "crashing_launcher.py"
    launcher.write_text(textwrap.dedent(CRASHING_LAUNCHER))
    crashed = torchrun(*ADDING, "--steps", "30", "--checkpoint-every", "10", "--out",
                       str(run_dir), "--distributed", "fsdp", program=[str(launcher)],
                       check=False, CRASH_AT="15")
    assert crashed.returncode != 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 10
    torchrun("--resume", str(run_dir), "--progress", "never")
    expected = weights(fsdp_run)
    for name, tensor in weights(run_dir).items():
        assert torch.equal(tensor, expected[name]), name
    assert metrics(run_dir) == metrics(fsdp_run)


def write_comments(path: Path, count: int = 96) -> Path:
    """Comments labelled by marker words ('grr' toxic, 'bah' insult)."""
    rng = random.Random(0)
    words = ["page", "edit", "article", "source", "thanks", "please", "talk", "section"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "comment_text", "toxic", "insult"])
        for index in range(count):
            toxic, insult = rng.random() < 0.4, rng.random() < 0.3
            text = [rng.choice(words) for _ in range(rng.randint(2, 20))]
            text += ["grr"] * toxic + ["bah"] * insult
            writer.writerow([f"r{index}", " ".join(text), int(toxic), int(insult)])
    return path


@pytest.mark.parametrize(("task", "mode"), [("temporal-order", "ddp"), ("text", "fsdp")])
def test_every_task_trains_under_torchrun(task, mode, tmp_path):
    if task == "text":
        pytest.importorskip("tokenizers")
        options = ["--data", str(write_comments(tmp_path / "comments.csv")), "--model", "gru",
                   "--bidirectional", "--embed-dim", "8", "--vocab-size", "100",
                   "--max-len", "24", "--epochs", "1"]
    else:
        options = ["--model", "lstm", "--steps", "10"]
    run_dir = tmp_path / "run"
    torchrun("--task", task, *options, "--hidden-size", "8", "--batch-size", "16",
             "--progress", "never", "--out", str(run_dir), "--distributed", mode)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert len(metrics(run_dir)) == summary["step"]


def test_distributed_mode_outside_torchrun_is_one_error_line_and_exit_2(monkeypatch, capsys,
                                                                         tmp_path):
    from gradclip.app.cli import main

    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    code = main(["train", "--distributed", "fsdp", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "torchrun" in error[0]
    assert not (tmp_path / "run").exists()

