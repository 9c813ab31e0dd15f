"""The language-model task: windows over parallel streams, the state carried, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from gradclip.app.cli import main
from gradclip.app.config import ModelConfig, TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.language_model import RecurrentLanguageModel
from gradclip.app.models import build_model
from gradclip.app.tasks.lm.task import LanguageModelTask, bits_per_character
from gradclip.app.training.trainer import Trainer

SMALL = ["--task", "lm", "--seq-len", "10", "--batch-size", "4", "--hidden-size", "16",
         "--embed-dim", "8", "--device", "cpu", "--progress", "never"]


def lm_task(**options) -> LanguageModelTask:
    values = {"name": "lm", "seed": 0, "batch_size": 4, "seq_len": 10, **options}
    return LanguageModelTask.from_options(TaskOptions(**values))


def test_bits_per_character_of_a_perfect_predictor_on_a_repeated_string_is_zero():
    targets = torch.tensor([0, 1, 2] * 20)
    logits = torch.full((60, 3), -1e4).scatter(1, targets.unsqueeze(1), 1e4)
    assert bits_per_character(logits, targets) == pytest.approx(0.0, abs=1e-12)
    assert bits_per_character(torch.zeros(60, 4), targets) == pytest.approx(2.0)


def test_a_window_is_the_next_piece_of_every_stream_with_targets_shifted_by_one():
    task = lm_task()
    first, second = task.train_batch(0), task.train_batch(1)
    assert first.inputs.shape == first.targets.shape == (4, 10)
    assert torch.equal(first.targets[:, :-1], first.inputs[:, 1:])
    assert torch.equal(second.inputs[:, 0], first.targets[:, -1])
    assert torch.equal(task.train_batch(task.windows_per_epoch).inputs, first.inputs)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_two_windows_with_the_carried_state_equal_one_pass_over_both(cell):
    torch.manual_seed(0)
    model = RecurrentLanguageModel(cell, 12, streams=3, windows_per_epoch=5, embed_dim=4,
                                   hidden_size=6, layers=2)
    ids = torch.randint(0, 12, (3, 14))
    model.train()
    joined = torch.cat([model(ids[:, :7]), model(ids[:, 7:])], dim=1)
    model.eval()
    torch.testing.assert_close(joined, model(ids), rtol=1e-6, atol=1e-6)


def test_the_state_restarts_from_zeros_at_each_pass_over_the_text():
    torch.manual_seed(0)
    model = RecurrentLanguageModel("gru", 12, streams=2, windows_per_epoch=2, embed_dim=4,
                                   hidden_size=6).train()
    window = torch.randint(0, 12, (2, 5))
    first = model(window)
    model(window)
    torch.testing.assert_close(model(window), first, rtol=0, atol=0)  # window 2: a new pass


def test_the_built_in_text_trains_and_scores_bits_per_character(tmp_path, capsys):
    assert main(["train", *SMALL, "--steps", "6", "--out", str(tmp_path / "run")]) == 0
    output = capsys.readouterr().out
    assert "bits_per_char" in output and "Alice" in output


def test_resume_across_a_window_boundary_is_bit_identical(tmp_path, monkeypatch):
    args = [*SMALL, "--model", "lstm", "--steps", "8", "--checkpoint-every", "3",
            "--accumulate", "2"]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0

    class Crash(Exception):
        pass

    step = Trainer.train_one_step

    def crash_at_5(self, monitor=None):
        if self.counters.step == 5:
            raise Crash
        return step(self, monitor)

    monkeypatch.setattr(Trainer, "train_one_step", crash_at_5)
    with pytest.raises(Crash):
        main(["train", *args, "--out", str(tmp_path / "crashed")])
    monkeypatch.setattr(Trainer, "train_one_step", step)
    assert main(["train", "--resume", str(tmp_path / "crashed"), "--progress", "never"]) == 0
    expected = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == expected["step"] == 8
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert int(expected["model"]["windows_done"]) == 16


def test_a_text_file_is_modelled_and_its_change_stops_a_resume(tmp_path, capsys):
    text = tmp_path / "story.txt"
    text.write_text("the cat sat on the mat. " * 40)
    run_dir = tmp_path / "run"
    assert main(["train", *SMALL, "--text-file", str(text), "--steps", "2",
                 "--checkpoint-every", "1", "--out", str(run_dir)]) == 0
    text.write_text("another text entirely. " * 40)
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "changed since the run started" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--bidirectional"], "--bidirectional would let the model see"),
    (["--batch-size", "2000"], "too short for --batch-size 2000"),
    (["--text-file", "a.txt", "--data", "b.csv"], "not both"),
])
def test_lm_mistakes_are_one_line(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    code = main(["train", *SMALL, *flags, "--steps", "2"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0]
    assert not (tmp_path / "runs").exists()


def test_the_model_the_task_needs_predicts_every_position():
    task = lm_task()
    model = build_model(task, **{**ModelConfig(hidden_size=8, embed_dim=4).__dict__})
    logits = model.eval()(task.train_batch(0).inputs)
    assert logits.shape == (4, 10, task.vocab_size)
    assert math.isclose(task.evaluate(model, torch.device("cpu"))["bits_per_char"],
                        task.evaluate(model, torch.device("cpu"))["loss"] / math.log(2))


def test_lm_refuses_distributed_runs():
    from gradclip.app.config import RunConfig, TrainConfig
    from gradclip.app.training.parallel import DataParallel, Launch

    task = lm_task()
    config = RunConfig(task.config(), ModelConfig(hidden_size=8), TrainConfig(total_steps=1))
    with pytest.raises(UserError, match="cannot run with --distributed ddp \\(its carried state belongs"):
        Trainer("unused", config, task, DataParallel(torch.device("cpu"), Launch(0, 2, 0)))
