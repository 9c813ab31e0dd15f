"""``gradclip train`` and ``demo`` end to end on small settings, and every bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import run_cli

SMALL = ["--hidden-size", "8", "--batch-size", "8", "--threads", "1", "--device", "cpu"]


@pytest.mark.parametrize(("task", "metric"), [("adding", "mse"), ("temporal-order", "accuracy")])
def test_train_writes_a_complete_run_directory(tmp_path, capsys, task, metric):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["train", "--task", task, "--steps", "12", "--out", out, *SMALL],
                              capsys)
    assert code == 0
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt"} <= {
        path.name for path in out.iterdir()}
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and metric in summary["eval"]
    assert "completed after 12 of 12 steps" in stdout and "criterion" in stdout


def test_train_default_out_dir_is_named_after_task_model_and_clip(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli(["train", "--steps", "2", "--model", "gru", "--clip", "value:0.5",
                          *SMALL], capsys)
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("adding-gru-value_0.5-")


def test_resuming_a_finished_run_keeps_its_result(tmp_path, capsys):
    out = tmp_path / "run"
    run_cli(["train", "--steps", "5", "--out", out, *SMALL], capsys)
    before = (out / "metrics.jsonl").read_text()
    code, stdout, _ = run_cli(["train", "--resume", out], capsys)
    assert code == 0 and "completed after 5 of 5 steps" in stdout
    assert (out / "metrics.jsonl").read_text() == before


def test_help_states_each_option_and_its_default(capsys):
    code, stdout, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    for option in ["--task", "--clip", "--lr", "--optimizer", "--steps", "--epochs", "--resume",
                   "--accumulate", "--seq-len", "--out", "--amp"]:
        assert option in stdout
    shown = " ".join(stdout.split())
    assert "(default: norm:1.0)" in shown and "(default: sgd; --task text: adamw; --task lm --model transformer: adamw)" in shown


OLD_RUN = Path(__file__).parents[1] / "app" / "training" / "fixtures" / "run-written-by-0.1.0"


def corrupt_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "corrupt"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((OLD_RUN / "config.json").read_text())
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return run_dir


BAD_INPUTS = {
    "unknown clip spec": (["train", "--clip", "bogus:1"], "bogus"),
    "negative learning rate": (["train", "--lr", "-0.1"], "--lr"),
    "non-numeric steps": (["train", "--steps", "many"], "--steps"),
    "unknown flag": (["train", "--colour", "red"], "--colour"),
    "unknown task": (["train", "--task", "chess"], "--task"),
    "epochs on a synthetic task": (["train", "--epochs", "2"], "--epochs"),
    "steps and epochs": (["train", "--steps", "2", "--epochs", "2"], "not both"),
    "sequence too short": (["train", "--task", "temporal-order", "--seq-len", "5"], "--seq-len"),
    "text without data": (["train", "--task", "text"], "--data"),
    "fp16 on cpu": (["train", "--amp", "fp16", "--device", "cpu"], "CUDA"),
    "resume missing dir": (["train", "--resume", "{tmp}/nowhere"], "does not exist"),
    "resume a file": (["train", "--resume", "{corrupt}/config.json"], "is a file, not a folder"),
    "out a file": (["train", "--steps", "2", "--out", "{corrupt}/config.json"],
                   "is a file, not a folder"),
    "resume dir without run": (["train", "--resume", "{tmp}"], "config.json"),
    "resume corrupt checkpoint": (["train", "--resume", "{corrupt}"], "corrupt checkpoint"),
    "eval missing csv": (["eval", "{corrupt}", "--data", "{tmp}/missing.csv"], "no such file"),
    "demo bad clip": (["demo", "--clips", "norm:-1"], "norm:-1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line_and_exit_code_2(tmp_path, capsys, monkeypatch, case):
    argv, expected = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    corrupt = corrupt_run(tmp_path)
    argv = [arg.format(tmp=tmp_path, corrupt=corrupt) for arg in argv]
    code, _, stderr = run_cli(argv, capsys)
    lines = stderr.strip().splitlines()
    assert code == 2
    assert 1 <= len(lines) <= 3 and "Traceback" not in stderr
    assert "error:" in lines[0] and expected in lines[0]
    assert not (tmp_path / "runs").exists(), "a refused command must not leave a run folder"


def test_out_dir_holding_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    run_cli(["train", "--steps", "2", "--out", out, *SMALL], capsys)
    code, _, stderr = run_cli(["train", "--steps", "2", "--out", out, *SMALL], capsys)
    assert code == 2 and "--resume" in stderr


def test_bad_input_through_the_installed_command_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gradclip", "train", "--resume",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("gradclip: error:") and len(result.stderr.splitlines()) == 1


def test_demo_compares_strategies_in_a_table_and_a_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, stdout, _ = run_cli(["demo", "--steps", "40", "--seeds", "1", "--workers", "1",
                               "--clips", "none,norm:1.0", "--out", tmp_path / "demo"], capsys)
    assert code == 0
    assert "strategy" in stdout and "norm:1.0" in stdout and "max grad norm" in stdout
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert [row["strategy"] for row in rows] == ["none", "norm:1.0"]


def test_make_demo_command_path_runs_the_installed_entry_point(tmp_path):
    """`make demo` runs `$(BIN)/gradclip demo`; here short, with its two worker processes."""
    pytest.importorskip("matplotlib")
    binary = Path(sys.executable).with_name("gradclip")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "gradclip"]
    result = subprocess.run([*command, "demo", "--steps", "60", "--seeds", "1", "--out",
                             str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=170,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "value:0.01" in result.stdout and "How to read this" in result.stdout


def test_version_names_gradclip_and_torch(capsys):
    from gradclip import __version__

    code, stdout, _ = run_cli(["--version"], capsys)
    assert code == 0 and stdout.startswith(f"gradclip {__version__} (torch ")


def test_compare_with_the_singular_clip_flag_suggests_clips(tmp_path, capsys):
    code, _, stderr = run_cli(["compare", "--clip", "norm:1.0", "--out", tmp_path / "c"], capsys)
    assert code == 2 and "did you mean --clips norm:1.0?" in stderr
    assert not (tmp_path / "c").exists()
