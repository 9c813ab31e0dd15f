"""The training loop: clip once per optimizer step, skip non-finite steps, keep the log honest."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gradclip.app.loop import Trainer, TrainingError
from gradclip.app.run_dir import read_metrics
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.tasks.base import Batch


def config(**train):
    settings = {"clip": "norm:1.0", "nonfinite": "propagate", "optimizer": "sgd", "lr": 0.05,
                "momentum": 0.9, "weight_decay": 0.0, "schedule": "constant", "total_steps": 6,
                "epochs": None, "batch_size": 8, "accumulate": 1, "amp": "none", "seed": 0,
                "device": "cpu", "threads": 1, "log_every": 2, "eval_every": 0,
                "checkpoint_every": 0}
    settings.update(train)
    return {"task": {}, "train": settings,
            "model": {"cell": "rnn", "hidden_size": 8, "layers": 1, "bidirectional": False,
                      "dropout": 0.0, "embed_dim": 8}}


class CountingTask(AddingTask):
    """The adding task, counting the batches drawn; the loss is NaN at chosen batch indices."""

    def __init__(self, nan_at=()):
        super().__init__(6, 8, seed=0)
        self.drawn, self.nan_at = [], set(nan_at)

    def train_batch(self, index):
        self.drawn.append(index)
        return super().train_batch(index)

    def loss(self, outputs, batch: Batch):
        loss = super().loss(outputs, batch)
        return loss * math.nan if self.drawn[-1] in self.nan_at else loss


def count_clips(trainer):
    calls = []
    original = trainer.clipper.clip_

    def spy(parameters):
        calls.append(trainer.counters.next_batch_index)
        return original(parameters)

    trainer.clipper.clip_ = spy
    return calls


def test_accumulation_clips_once_per_optimizer_step_after_all_micro_batches(tmp_path):
    task = CountingTask()
    trainer = Trainer(tmp_path, config(accumulate=3, total_steps=4), task)
    calls = count_clips(trainer)
    trainer.train(progress=False)
    assert task.drawn == list(range(12))
    assert calls == [3, 6, 9, 12]


def test_skip_policy_skips_the_step_with_a_nan_loss_and_counts_it(tmp_path):
    task = CountingTask(nan_at={2})
    trainer = Trainer(tmp_path, config(nonfinite="skip"), task)
    weights = {}
    original_step = trainer.optimizer_step

    def watch(log_layers):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        result = original_step(log_layers)
        weights[trainer.counters.step + 1] = all(
            torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True))
        return result

    trainer.optimizer_step = watch
    summary = trainer.train(progress=False)
    assert summary["status"] == "completed" and summary["step"] == 6
    assert summary["skipped_steps"] == 1 and summary["nonfinite_loss_steps"] == 1
    assert weights == {1: False, 2: False, 3: True, 4: False, 5: False, 6: False}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [record["skipped"] for record in read_metrics(tmp_path)] == [
        False, False, True, False, False, False]


def test_clipper_spec_with_nonfinite_skip_skips_the_step_and_training_goes_on(tmp_path):
    trainer = Trainer(tmp_path, config(clip="norm:1.0,nonfinite=skip"), CountingTask(nan_at={2}))
    summary = trainer.train(progress=False)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_propagate_policy_stops_the_run_as_diverged_at_the_first_nan_loss(tmp_path):
    summary = Trainer(tmp_path, config(), CountingTask(nan_at={3})).train(progress=False)
    assert summary["status"] == "diverged"
    assert summary["step"] == 4 and summary["first_nonfinite_step"] == 4


def test_every_step_is_logged_with_norm_threshold_and_per_layer_norms_at_the_interval(tmp_path):
    Trainer(tmp_path, config(), CountingTask()).train(progress=False)
    records = read_metrics(tmp_path)
    assert [record["step"] for record in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert {"loss", "grad_norm", "threshold", "clipped", "skipped", "lr"} <= record.keys()
        assert record["threshold"] == 1.0
    assert ["layer_grad_norms" in record for record in records] == [False, True] * 3
    assert set(records[1]["layer_grad_norms"]) >= {"head", "layers.0.directions.0"}


def test_logged_grad_norm_is_measured_before_clipping(tmp_path):
    Trainer(tmp_path, config(clip="norm:1e-6"), CountingTask()).train(progress=False)
    records = read_metrics(tmp_path)
    assert all(record["grad_norm"] > 1e-3 and record["clipped"] for record in records)


def test_bf16_autocast_on_cpu_trains_with_finite_loss(tmp_path):
    summary = Trainer(tmp_path, config(amp="bf16"), CountingTask()).train(progress=False)
    assert summary["status"] == "completed" and math.isfinite(summary["final_train_loss"])


def test_summary_json_reports_the_validation_score_and_criterion(tmp_path):
    Trainer(tmp_path, config(), CountingTask()).train(progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval"]["mse"] > 0 and "MSE < 0.01" in summary["success_criterion"]


def test_error_policy_stops_naming_the_first_parameter_with_a_nan_gradient(tmp_path):
    trainer = Trainer(tmp_path, config(nonfinite="error"), CountingTask(nan_at={1}))
    with pytest.raises(TrainingError, match=r"step 2: .*gradient of 'layers\.0\.directions\.0\."):
        trainer.train(progress=False)
