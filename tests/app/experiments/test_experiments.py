"""Experiments built on the trainer: the profile's monitor, the demo's runs, the compare grid."""

from __future__ import annotations

import math

from gradclip.app.config import ModelConfig, RunConfig, TaskOptions, TrainConfig
from gradclip.app.experiments import compare, demo
from gradclip.app.experiments.profile import measure
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.training.loggers import MetricsLogger
from gradclip.app.training.runs import NewRun


def test_profile_samples_the_raw_gradients_even_under_a_tight_clip(tmp_path):
    new = NewRun(TaskOptions(name="adding", seed=0, batch_size=8, seq_len=6),
                 ModelConfig(hidden_size=8),
                 TrainConfig(clip="norm:1e-6", total_steps=5, batch_size=8, device="cpu",
                             log_every=0, checkpoint_every=0), tmp_path / "profile")
    run_dir, summary, profile = measure(new, [MetricsLogger(tmp_path / "profile")])
    assert summary["step"] == 5 and len(profile.global_norms) == 5
    assert min(profile.global_norms) > 1e-3  # measured before the clip
    assert float(max(magnitudes.max() for magnitudes in profile.magnitudes)) > 1e-6


def test_a_demo_run_is_the_documented_setting_and_its_config_round_trips():
    run = demo.DemoRun("norm:1.0", seed=2, steps=40, run_dir=None)
    config = demo.demo_config(run, AddingTask(demo.SEQ_LEN, demo.BATCH, 2))
    assert (config.train.lr, config.train.momentum, config.train.schedule) == (
        demo.LR, demo.MOMENTUM, demo.SCHEDULE)
    assert config.model.hidden_size == demo.HIDDEN and config.train.total_steps == 40
    assert RunConfig.from_dict(config.to_dict()) == config


def test_the_compare_grid_is_every_combination_in_command_line_order():
    settings = compare.grid(["rnn", "lstm"], [10], [0.1, 0.2], ["none"])
    assert [(s.model, s.lr) for s in settings] == [("rnn", 0.1), ("rnn", 0.2), ("lstm", 0.1),
                                                   ("lstm", 0.2)]
    assert settings[0].folder(3) == "rnn-T10-lr0.1-none-seed3"


def test_mean_and_spread_count_the_non_finite_runs_apart():
    assert compare.mean_std([1.0, 3.0, math.nan]) == "2 ± 1.4 (1 NaN)"
    assert compare.mean_std([math.nan]) == "NaN"


def test_progress_line_names_the_run_below_the_grids_common_folder(tmp_path, capsys):
    from gradclip.app.experiments.compare import ProgressLine

    root = tmp_path / "bench" / "runs"
    meter = ProgressLine(2, 0, root=root)
    result = {"run_dir": str(root / "lm-rnn" / "lr1" / "norm_8.2-seed0"), "wall_seconds": 3.0,
              "summary": {"status": "completed"}}
    meter.done(result)
    ProgressLine(2, 0).done(result)  # no root: the last two levels
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("[1/2] lm-rnn/lr1/norm_8.2-seed0: completed in 3 s")
    assert second.startswith("[1/2] lr1/norm_8.2-seed0: completed in 3 s")
