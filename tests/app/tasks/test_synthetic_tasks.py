"""Synthetic tasks: batches are a pure function of (seed, index); targets and criteria hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradclip.app.errors import UserError
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.tasks.base import seeded_generator
from gradclip.app.tasks.temporal_order import BEGIN, END, RELEVANT, TemporalOrderTask


@pytest.mark.parametrize("task_class", [AddingTask, TemporalOrderTask])
def test_training_batch_depends_only_on_seed_and_index(task_class):
    first, again = task_class(20, 8, seed=3), task_class(20, 8, seed=3)
    assert torch.equal(first.train_batch(5).inputs, again.train_batch(5).inputs)
    assert not torch.equal(first.train_batch(5).inputs, first.train_batch(6).inputs)
    assert not torch.equal(first.train_batch(5).inputs, task_class(20, 8, seed=4).train_batch(5).inputs)


def test_adding_target_is_the_sum_of_the_two_marked_numbers_one_per_half():
    batch = AddingTask(12, 16, seed=0).train_batch(0)
    numbers, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert torch.equal(markers[:, :6].sum(1), torch.ones(16))
    assert torch.equal(markers[:, 6:].sum(1), torch.ones(16))
    torch.testing.assert_close((numbers * markers).sum(1), batch.targets)


class ConstantModel(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, inputs, lengths):
        return self.value.expand(inputs.shape[0], -1)


class AddingOracle(nn.Module):
    def forward(self, inputs, lengths):
        return (inputs[..., 0] * inputs[..., 1]).sum(1, keepdim=True)


def test_adding_baseline_of_predicting_one_scores_about_one_sixth():
    batch = AddingTask(10, 8, seed=0).generate(100_000, seeded_generator(0, 1))
    assert abs(((batch.targets - 1) ** 2).mean().item() - 1 / 6) < 0.005


def test_adding_evaluation_scores_the_validation_mse_and_a_constant_model_fails():
    task = AddingTask(10, 8, seed=0)
    scores = task.evaluate(ConstantModel(torch.ones(1)), torch.device("cpu"))
    expected = ((task.validation.targets - 1) ** 2).mean().item()
    assert scores["mse"] == pytest.approx(expected, rel=1e-6)
    assert scores["success"] is False


def test_adding_exact_answer_meets_the_success_criterion():
    scores = AddingTask(10, 8, seed=0).evaluate(AddingOracle(), torch.device("cpu"))
    assert scores["mse"] < 1e-10 and scores["success"] is True


def test_temporal_order_sequences_have_markers_two_relevant_symbols_and_their_class():
    task = TemporalOrderTask(30, 32, seed=1)
    batch = task.train_batch(0)
    symbols = batch.inputs.argmax(dim=2)
    assert torch.all(symbols[:, 0] == BEGIN) and torch.all(symbols[:, -1] == END)
    relevant = symbols >= RELEVANT
    relevant &= symbols < BEGIN
    assert torch.all(relevant.sum(1) == 2)
    positions = relevant.nonzero()[:, 1].view(-1, 2)
    assert torch.all((positions[:, 0] >= 3) & (positions[:, 0] < 6))
    assert torch.all((positions[:, 1] >= 15) & (positions[:, 1] < 18))
    pairs = symbols.gather(1, positions) - RELEVANT
    assert torch.equal(2 * pairs[:, 0] + pairs[:, 1], batch.targets)


def test_temporal_order_chance_prediction_fails_the_criterion():
    task = TemporalOrderTask(20, 8, seed=0)
    scores = task.evaluate(ConstantModel(torch.tensor([1.0, 0, 0, 0])), torch.device("cpu"))
    assert scores["accuracy"] < 0.5 and scores["success"] is False


@pytest.mark.parametrize(("task_class", "too_short"), [(AddingTask, 1), (TemporalOrderTask, 9)])
def test_too_short_sequences_are_a_user_error(task_class, too_short):
    with pytest.raises(UserError, match="--seq-len"):
        task_class(too_short, 8, seed=0)


def test_task_rebuilt_from_its_config_gives_the_same_batches(tmp_path):
    task = TemporalOrderTask(20, 8, seed=5)
    rebuilt = TemporalOrderTask.from_config(task.config(), tmp_path)
    assert torch.equal(task.train_batch(7).inputs, rebuilt.train_batch(7).inputs)
