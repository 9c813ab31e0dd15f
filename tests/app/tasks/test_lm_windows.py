"""The language-model task for the transformer: independent random windows, bounded scoring."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradclip.app.config import ModelConfig, TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.models import build_model
from gradclip.app.tasks.lm import task as lm
from gradclip.app.tasks.lm.task import LanguageModelTask
from gradclip.app.transformer import TransformerLanguageModel

CPU = torch.device("cpu")


def window_task(tmp_path=None, text: str | None = None, **options) -> LanguageModelTask:
    values = {"name": "lm", "seed": 0, "batch_size": 4, "seq_len": 8, "model": "transformer",
              **options}
    if text is not None:
        path = tmp_path / "text.txt"
        path.write_text(text)
        values["text_file"] = path
    return LanguageModelTask.from_options(TaskOptions(**values))


class NextInCycle(nn.Module):
    """A perfect predictor of the text ``abcabc...``: all mass on the next letter."""

    def __init__(self, vocabulary: list[str]):
        super().__init__()
        self.vocabulary = vocabulary

    def forward(self, inputs, lengths=None):
        index = {char: i for i, char in enumerate(self.vocabulary)}
        following = torch.tensor([index.get({"a": "b", "b": "c", "c": "a"}.get(char, "a"))
                                  for char in self.vocabulary])
        logits = torch.full((*inputs.shape, len(self.vocabulary)), -1e4)
        return logits.scatter(2, following[inputs].unsqueeze(2), 1e4)


def test_the_task_records_independent_windows_for_the_transformer_only():
    assert window_task().config()["windows"] == "independent"
    recurrent = window_task(model="lstm")
    assert "windows" not in recurrent.config() and recurrent.windows == "streams"


def test_a_window_is_a_random_piece_of_the_training_text_with_targets_shifted_by_one():
    task = window_task()
    batch = task.train_batch(0)
    assert batch.inputs.shape == batch.targets.shape == (4, 8)
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    text = task.train_ids.tolist()
    for row in torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).tolist():
        assert any(text[i:i + 9] == row for i in range(len(text) - 8))


def test_windows_are_a_pure_function_of_seed_and_index():
    task, again, other_seed = window_task(), window_task(), window_task(seed=1)
    assert torch.equal(task.train_batch(7).inputs, again.train_batch(7).inputs)
    assert not torch.equal(task.train_batch(7).inputs, task.train_batch(8).inputs)
    assert not torch.equal(task.train_batch(7).inputs, other_seed.train_batch(7).inputs)


def test_the_default_context_of_the_transformer_is_64():
    assert window_task(seq_len=None).seq_len == 64
    assert window_task(seq_len=None, model="rnn").seq_len == lm.DEFAULT_SEQ_LEN


def test_a_perfect_predictor_on_a_repeated_string_scores_zero_bits_per_character(tmp_path):
    task = window_task(tmp_path, "abc" * 400)
    scores = task.evaluate(NextInCycle(task.vocabulary), CPU)
    assert scores["bits_per_char"] == pytest.approx(0.0, abs=1e-9)
    assert scores["perplexity"] == pytest.approx(1.0)


def test_a_uniform_predictor_scores_log2_of_the_vocabulary(tmp_path):
    task = window_task(tmp_path, "abc" * 400)

    def uniform(inputs, lengths=None):
        return torch.zeros(*inputs.shape, task.vocab_size)

    assert task.evaluate(uniform, CPU)["bits_per_char"] == pytest.approx(
        math.log2(task.vocab_size))


def test_validation_scores_at_most_the_bounded_number_of_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "VALIDATION_WINDOWS", 5)
    task = window_task(tmp_path, "abcd" * 1000, seq_len=4)
    seen = []

    def recording(inputs, lengths=None):
        seen.append(inputs)
        return torch.zeros(*inputs.shape, task.vocab_size)

    task.evaluate(recording, CPU)
    windows = torch.cat(seen)
    assert windows.shape == (5, 4)
    assert task.describe()["val_windows_scored"] == 5
    total, count = lm.score_windows(recording, task.validation_ids, 4, CPU, None)
    assert count == 4 * ((len(task.validation_ids) - 1) // 4)


def test_the_model_built_for_the_task_has_its_context_and_vocabulary():
    task = window_task()
    model = build_model(task, **{**ModelConfig(cell="transformer", hidden_size=16, layers=1,
                                               heads=2).__dict__})
    assert isinstance(model, TransformerLanguageModel) and model.context == 8
    assert model(task.train_batch(0).inputs).shape == (4, 8, task.vocab_size)


def test_a_model_that_does_not_match_the_tasks_windows_is_a_user_error():
    with pytest.raises(UserError, match="needs --task lm with independent windows"):
        build_model(window_task(model="rnn"), **ModelConfig(cell="transformer", heads=2,
                                                            hidden_size=8).__dict__)
    with pytest.raises(UserError, match="needs the carried streams"):
        build_model(window_task(), **ModelConfig(cell="gru", hidden_size=8).__dict__)


def test_a_text_too_short_for_one_window_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="too short for windows of --seq-len 8"):
        window_task(tmp_path, "abcdefghij" * 5)
