"""The training loop: clip once per optimizer step, skip non-finite steps, keep the log honest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from gradclip.app.cli import main
from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.errors import TrainingError, UserError
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.tasks.base import Batch
from gradclip.app.training.loggers import MetricsLogger, StepLogger
from gradclip.app.training.metrics_log import read_metrics
from gradclip.app.training.trainer import Trainer
from gradclip.monitor import GradientMonitor

OLD_RUN = Path(__file__).parent / "fixtures" / "run-written-by-0.1.0"


def config(**train):
    settings = {"total_steps": 6, "batch_size": 8, "device": "cpu", "log_every": 2,
                "checkpoint_every": 0, **train}
    return RunConfig(task={"name": "adding"}, train=TrainConfig(**settings),
                     model=ModelConfig(hidden_size=8, embed_dim=8))


def train(trainer, run_dir, **kwargs):
    return trainer.train(loggers=[MetricsLogger(run_dir)], **kwargs)


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

    def spy(parameters, loss=None):
        calls.append(trainer.counters.next_batch_index)
        return original(parameters, loss=loss)

    trainer.clipper.clip_ = spy
    return calls


def test_accumulation_clips_once_per_optimizer_step_after_all_micro_batches(tmp_path):
    task = CountingTask()
    trainer = Trainer(tmp_path, config(accumulate=3, total_steps=4), task)
    calls = count_clips(trainer)
    train(trainer, tmp_path)
    assert task.drawn == list(range(12))
    assert calls == [3, 6, 9, 12]


def test_skip_policy_skips_the_step_with_a_nan_loss_and_counts_it(tmp_path):
    task = CountingTask(nan_at={2})
    trainer = Trainer(tmp_path, config(nonfinite="skip"), task)
    weights = {}
    original_step = trainer.optimizer_step

    def watch(monitor, log_layers):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        result = original_step(monitor, log_layers)
        weights[trainer.counters.step + 1] = all(
            torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True))
        return result

    trainer.optimizer_step = watch
    summary = train(trainer, tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 6
    assert summary["skipped_steps"] == 1 and summary["nonfinite_loss_steps"] == 1
    assert weights == {1: False, 2: False, 3: True, 4: False, 5: False, 6: False}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [record["skipped"] for record in read_metrics(tmp_path)] == [
        False, False, True, False, False, False]


def test_clipper_spec_with_nonfinite_skip_skips_the_step_and_training_goes_on(tmp_path):
    trainer = Trainer(tmp_path, config(clip="norm:1.0,nonfinite=skip"), CountingTask(nan_at={2}))
    summary = train(trainer, tmp_path)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_propagate_policy_stops_the_run_as_diverged_at_the_first_nan_loss(tmp_path):
    summary = train(Trainer(tmp_path, config(), CountingTask(nan_at={3})), tmp_path)
    assert summary["status"] == "diverged"
    assert summary["step"] == 4 and summary["first_nonfinite_step"] == 4


def test_every_step_is_logged_with_norm_threshold_and_per_layer_norms_at_the_interval(tmp_path):
    train(Trainer(tmp_path, config(), CountingTask()), tmp_path)
    records = read_metrics(tmp_path)
    assert [record["step"] for record in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert {"loss", "grad_norm", "threshold", "clipped", "skipped", "lr"} <= record.keys()
        assert record["threshold"] == 1.0
    assert ["layer_grad_norms" in record for record in records] == [False, True] * 3
    assert set(records[1]["layer_grad_norms"]) >= {"head", "layers.0.directions.0"}


def test_logged_grad_norm_is_measured_before_clipping(tmp_path):
    train(Trainer(tmp_path, config(clip="norm:1e-6"), CountingTask()), tmp_path)
    records = read_metrics(tmp_path)
    assert all(record["grad_norm"] > 1e-3 and record["clipped"] for record in records)


def test_bf16_autocast_on_cpu_trains_with_finite_loss(tmp_path):
    summary = train(Trainer(tmp_path, config(amp="bf16"), CountingTask()), tmp_path)
    assert summary["status"] == "completed" and math.isfinite(summary["final_train_loss"])


def test_summary_json_reports_the_validation_score_and_criterion(tmp_path):
    train(Trainer(tmp_path, config(), CountingTask()), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval"]["mse"] > 0 and "MSE < 0.01" in summary["success_criterion"]


def test_error_policy_stops_naming_the_first_parameter_with_a_nan_gradient(tmp_path):
    trainer = Trainer(tmp_path, config(nonfinite="error"), CountingTask(nan_at={1}))
    with pytest.raises(TrainingError, match=r"step 2: .*gradient of 'layers\.0\.directions\.0\."):
        train(trainer, tmp_path)


def test_monitor_is_stepped_on_the_raw_gradients_before_the_clip(tmp_path):
    trainer = Trainer(tmp_path, config(clip="norm:1e-6", total_steps=3), CountingTask())
    monitor = GradientMonitor(trainer.model, every=1)
    train(trainer, tmp_path, monitor=monitor)
    report = monitor.report()
    assert report.global_norm > 1e-3
    assert report.global_norm == pytest.approx(read_metrics(tmp_path)[-1]["grad_norm"])


def test_every_logger_sees_every_step_a_flush_before_each_checkpoint_and_a_close(tmp_path):
    events = []

    class Recorder(StepLogger):
        def start(self, step, total):
            events.append(("start", step, total))

        def log_step(self, record, model, health=None):
            events.append(("step", record["step"]))

        def flush(self):
            events.append(("flush",))

        def close(self):
            events.append(("close",))

    trainer = Trainer(tmp_path, config(total_steps=4, checkpoint_every=2), CountingTask())
    trainer.train(loggers=[Recorder()])
    assert events == [("start", 0, 4), ("step", 1), ("step", 2), ("flush",), ("step", 3),
                      ("step", 4), ("flush",), ("close",)]


def test_nonfinite_flag_becomes_the_clippers_one_policy(tmp_path):
    trainer = Trainer(tmp_path, config(nonfinite="skip"), CountingTask())
    assert trainer.clipper.nonfinite == "skip"


def test_old_run_folder_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    assert main(["train", "--resume", str(old), "--progress", "never"]) == 0
    fresh = tmp_path / "fresh"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--hidden-size", "8",
                 "--batch-size", "8", "--steps", "8", "--checkpoint-every", "2",
                 "--log-every", "2", "--out", str(fresh), "--progress", "never"]) == 0
    resumed = torch.load(old / "checkpoint.pt", weights_only=False)
    expected = torch.load(fresh / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == expected["step"] == 8
    # The fixture's first steps ran on another CPU: its float kernels may differ in the last
    # bits from this machine's, so the weights agree to rounding, not bit for bit.
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=1e-5, atol=1e-6,
                                   msg=name)
    old_rows, fresh_rows = read_metrics(old), read_metrics(fresh)
    assert [sorted(row) for row in old_rows] == [sorted(row) for row in fresh_rows]
    assert [row.get("step") for row in old_rows] == [row.get("step") for row in fresh_rows]


def test_an_allocation_failure_at_a_step_is_one_user_error_line(tmp_path):
    trainer = Trainer(tmp_path, config(), CountingTask())

    def out_of_memory(monitor, log_layers):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 400000000000 bytes.")

    trainer.optimizer_step = out_of_memory
    with pytest.raises(UserError, match="out of memory at step 1: choose a smaller"):
        train(trainer, tmp_path)


def test_other_runtime_errors_at_a_step_are_not_disguised(tmp_path):
    trainer = Trainer(tmp_path, config(), CountingTask())

    def bug(monitor, log_layers):
        raise RuntimeError("shape mismatch")

    trainer.optimizer_step = bug
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train(trainer, tmp_path)
