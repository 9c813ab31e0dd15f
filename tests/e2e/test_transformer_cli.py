"""``--task lm --model transformer`` end to end: train, resume, eval, profile and compare."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from gradclip.app.cli import main
from gradclip.app.training.checkpoint import CHECKPOINT
from tests.e2e.cli import run_cli
from tests.e2e.test_resume import finish, gradclip, kill_after_first_checkpoint, metrics_lines

TINY = ["--task", "lm", "--model", "transformer", "--layers", "2", "--hidden-size", "16",
        "--heads", "2", "--seq-len", "16", "--batch-size", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny transformer run on the built-in text (warm-up, cosine, AdamW: the defaults)."""
    run_dir = tmp_path_factory.mktemp("transformer") / "run"
    code = main(["train", *TINY, "--steps", "12", "--warmup-steps", "4", "--progress", "never",
                 "--out", str(run_dir)])
    return code, run_dir


def test_train_records_the_transformer_and_its_schedule_and_scores_bits_per_char(trained):
    code, run_dir = trained
    assert code == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["cell"] == "transformer" and config["model"]["heads"] == 2
    assert config["task"]["windows"] == "independent" and config["task"]["seq_len"] == 16
    train = config["train"]
    assert (train["optimizer"], train["schedule"], train["warmup_steps"],
            train["min_lr_ratio"], train["weight_decay"]) == ("adamw", "cosine", 4, 0.1, 0.1)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["metric"] == "bits_per_char"
    assert 0 < summary["eval"]["bits_per_char"] < 8
    rates = [record["lr"] for record in metrics_lines(run_dir)]
    assert rates[:4] == pytest.approx([1e-3 * k / 5 for k in range(1, 5)])  # the warm-up
    # step 12 runs at step index 11: 7/8 of the way from the warm-up's end to the floor 1e-4
    assert rates[-1] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))


def test_eval_scores_another_text_in_bits_per_character(trained, tmp_path, capsys):
    _, run_dir = trained
    text = tmp_path / "other.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister. " * 4)
    code, out, _ = run_cli(["eval", run_dir, "--data", text, "--json"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["characters"] == 16 * ((len(text.read_text()) - 1) // 16)
    assert 0 < scores["bits_per_char"] < 8
    code, out, _ = run_cli(["eval", run_dir, "--data", text], capsys)
    assert code == 0 and "bits per character" in out


def test_eval_refuses_the_text_baseline_for_a_language_model(trained, tmp_path, capsys):
    _, run_dir = trained
    text = tmp_path / "other.txt"
    text.write_text("some text " * 20)
    code, _, err = run_cli(["eval", run_dir, "--data", text, "--baseline"], capsys)
    assert code == 2 and "--baseline is for runs of --task text" in err


def test_profile_measures_the_transformer_and_recommends(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, _ = run_cli(["profile", *TINY, "--steps", "10", "--progress", "never",
                            "--out", tmp_path / "profile"], capsys)
    assert code == 0 and "Recommended" in out
    profile = json.loads((tmp_path / "profile" / "profile.json").read_text())
    assert profile["steps"] == 10 and profile["module_norms"]


def test_compare_trains_the_transformer_under_each_clip(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, _, _ = run_cli(["compare", *TINY, "--steps", "6", "--clips", "none,norm:1.0",
                          "--seeds", "1", "--jobs", "1", "--threads", "1",
                          "--out", tmp_path / "compare"], capsys)
    assert code == 0
    runs = sorted((tmp_path / "compare" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["model"]["cell"] == "transformer"
        assert config["train"]["optimizer"] == "adamw"  # the transformer's defaults
    assert "bits_per_char" in (tmp_path / "compare" / "report.md").read_text()


def test_compare_refuses_to_mix_the_transformer_with_recurrent_models(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["compare", "--task", "lm", "--models", "rnn,transformer",
                            "--steps", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--models cannot mix transformer with recurrent models" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--task", "adding", "--model", "transformer"], "use it with --task lm, not --task adding"),
    (["--task", "lm", "--heads", "2"], "--heads is read only by --model transformer"),
    (["--task", "lm", "--model", "transformer", "--embed-dim", "8"],
     "--embed-dim is read only by the recurrent models"),
    (["--task", "lm", "--model", "transformer", "--hidden-size", "30", "--heads", "4"],
     "--hidden-size 30 must be a multiple of --heads 4"),
])
def test_transformer_mistakes_are_one_line(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", *flags, "--steps", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()


RESUMED = ["train", *TINY, "--dropout", "0.1", "--clip", "zclip", "--steps", "60",
           "--warmup-steps", "10", "--checkpoint-every", "10", "--log-every", "5",
           "--seed", "3", "--progress", "never"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_transformer_run_killed_and_resumed_ends_bit_identical(tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = gradclip(*RESUMED, "--out", uninterrupted)
    killed_at = kill_after_first_checkpoint(interrupted, RESUMED)
    assert killed_at < 60, "the run finished before it could be killed"
    finish(gradclip("train", "--resume", interrupted))
    finish(reference)
    expected = torch.load(uninterrupted / CHECKPOINT, weights_only=True)
    resumed = torch.load(interrupted / CHECKPOINT, weights_only=True)
    assert resumed["step"] == expected["step"] == 60
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert metrics_lines(interrupted) == metrics_lines(uninterrupted)
