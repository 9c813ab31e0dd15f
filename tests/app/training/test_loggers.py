"""Progress off a terminal and a metrics log that reaches the file as the run goes."""

from __future__ import annotations

import io
import re

import pytest
import torch

from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.training.loggers import (
    MetricsLogger,
    ProgressLines,
    ProgressLogger,
    duration,
    run_loggers,
)
from gradclip.app.training.metrics_log import read_metrics
from gradclip.app.training.trainer import Trainer

MODEL = torch.nn.Linear(1, 1)


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def steps_on_file(run_dir):
    path = run_dir / "metrics.jsonl"
    return [record["step"] for record in read_metrics(run_dir)] if path.exists() else []


def test_metrics_reach_the_file_at_every_log_every_step_and_not_only_at_checkpoints(tmp_path):
    log = MetricsLogger(tmp_path, every=3, clock=FakeClock())
    log.start(0, 10)
    seen = []
    for step in range(1, 8):
        log.log_step({"step": step, "loss": 0.5}, MODEL)
        seen.append(steps_on_file(tmp_path))
    log.close()
    assert seen[1] == [] and seen[2] == [1, 2, 3] and seen[4] == [1, 2, 3]
    assert seen[5] == [1, 2, 3, 4, 5, 6]
    assert steps_on_file(tmp_path) == list(range(1, 8))  # close writes what is pending


def test_metrics_reach_the_file_once_the_interval_has_passed(tmp_path):
    clock = FakeClock()
    log = MetricsLogger(tmp_path, every=0, seconds=30, clock=clock)
    log.start(0, 100)
    log.log_step({"step": 1, "loss": 0.5}, MODEL)
    clock.now += 29.9
    log.log_step({"step": 2, "loss": 0.5}, MODEL)
    assert steps_on_file(tmp_path) == []
    clock.now += 0.1
    log.log_step({"step": 3, "loss": 0.5}, MODEL)
    assert steps_on_file(tmp_path) == [1, 2, 3]
    clock.now += 10
    log.log_step({"step": 4, "loss": 0.5}, MODEL)
    assert steps_on_file(tmp_path) == [1, 2, 3]  # the interval restarts at each write
    log.flush()
    assert steps_on_file(tmp_path) == [1, 2, 3, 4]
    log.close()


def test_progress_lines_say_step_total_loss_and_eta_once_per_interval(capsys):
    clock = FakeClock()
    progress = ProgressLines("run-a", seconds=30, clock=clock)
    progress.start(20, 120)
    for step in range(21, 31):  # one step per 5 s: lines at 30 s, 60 s and 90 s
        clock.now += 5
        progress.log_step({"step": step, "loss": 0.25}, MODEL)
    for step in range(31, 41):
        clock.now += 5
        progress.log_step({"step": step, "loss": 0.125}, MODEL)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["run-a: step 26/120, loss 0.25, 0.2 steps/s, ETA 7 min 50 s",
                     "run-a: step 32/120, loss 0.125, 0.2 steps/s, ETA 7 min 20 s",
                     "run-a: step 38/120, loss 0.125, 0.2 steps/s, ETA 6 min 50 s"]


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (59.6, "1 min 00 s"),
                                               (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_duration_reads_as_a_person_says_it(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(("terminal", "progress", "kind"), [
    (False, None, ProgressLines), (True, None, ProgressLogger), (False, True, ProgressLogger),
    (True, False, None)])
def test_auto_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(
        tmp_path, monkeypatch, terminal, progress, kind):
    stdout = io.StringIO()
    stdout.isatty = lambda: terminal
    monkeypatch.setattr("sys.stdout", stdout)
    loggers = run_loggers(tmp_path, progress=progress, log_every=5)
    assert isinstance(loggers[0], MetricsLogger) and loggers[0].every == 5
    assert [type(logger) for logger in loggers[1:]] == ([kind] if kind else [])


def test_a_training_run_off_a_terminal_prints_its_progress(tmp_path, capsys):
    config = RunConfig(task={"name": "adding"}, model=ModelConfig(hidden_size=8, embed_dim=8),
                       train=TrainConfig(total_steps=4, batch_size=8, device="cpu",
                                         checkpoint_every=0))
    trainer = Trainer(tmp_path, config, AddingTask(6, 8, seed=0))
    trainer.train(loggers=[MetricsLogger(tmp_path), ProgressLines(seconds=0)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"step {k}/4" for k in range(1, 5)]
    assert all(re.fullmatch(r"step \d/4, loss [0-9.e+-]+, [0-9.e+]+ steps/s, ETA \d+ s", line)
               for line in lines), lines


def test_each_run_of_a_grid_says_its_progress_under_its_folder_name(tmp_path):
    from gradclip.app.experiments.compare import grid_loggers

    run_dir = tmp_path / "rnn-lr0.1-norm_1.0-seed0"
    metrics, progress = grid_loggers(run_dir, 50, progress=True)
    assert isinstance(metrics, MetricsLogger) and metrics.every == 50
    assert isinstance(progress, ProgressLines) and progress.prefix == f"{run_dir.name}: "
    assert [type(logger) for logger in grid_loggers(run_dir, 50, progress=False)] == [
        MetricsLogger]
