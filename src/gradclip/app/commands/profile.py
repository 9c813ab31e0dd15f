"""``gradclip profile``: measure gradients without clipping, diagnose them, recommend thresholds.

Runs ``--steps`` optimizer steps of a normal training run (``--clip none`` by default, or a
loose clip you give), with a ``GradientMonitor`` reading the raw gradients at every step, then
prints the distribution of the global and per-module norms, the monitor's verdicts and a line
``Recommended: --clip ...``, and writes ``profile.json`` and ``gradient_histogram.png`` into
``--out`` (itself a run directory: ``gradclip plot`` works on it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradclip.app.commands import options

DEFAULT_STEPS = 300


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="measure gradient norms without clipping and recommend thresholds",
        formatter_class=options.HelpFormatter, description=__doc__.split("\n")[0] + (
            "\n\nexample:\n  gradclip profile --task adding --seq-len 10 --model rnn "
            "--lr 0.15 --steps 300 --out runs/profile"))
    options.add_task_options(parser)
    options.add_model_options(parser)
    options.add_optimization_options(
        parser, steps_help="optimizer steps to measure",
        clip_help="clipping while measuring: none, or a loose one (e.g. norm:100)")
    group = parser.add_argument_group("profile")
    options.add_seed_option(group, "seed of weights and data")
    options.add_device_options(group)
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/profile-<task>-<model>-<time>)")
    group.add_argument("--percentile", type=options.percentile, default=90.0,
                       help="percentile of the observed global norms recommended as the norm "
                            "threshold")
    group.add_argument("--value-percentile", type=options.percentile, default=99.0,
                       help="percentile of sampled per-element magnitudes |g| recommended as "
                            "the value threshold (capped at norm threshold / sqrt(number of "
                            "gradient elements))")
    options.add_progress_option(group)
    parser.set_defaults(run=run, clip="none", steps=DEFAULT_STEPS)


def run(args: argparse.Namespace) -> int:
    import torch

    from gradclip.app.experiments.profile import format_profile, measure, recommend
    from gradclip.app.training.loggers import run_loggers
    from gradclip.app.training.rundir import json_safe, timestamped_dir, write_text

    options.fill_task_defaults(args)
    args.epochs = None
    args.out = args.out or timestamped_dir(f"profile-{args.task}-{args.model}")
    new = options.new_run(args, log_every=0, eval_every=0, checkpoint_every=0)
    loggers = run_loggers(args.out, progress=options.PROGRESS[args.progress])
    run_dir, summary, profile = measure(new, loggers)
    recommendation = recommend(profile, args.percentile, args.value_percentile)
    print(format_profile(profile, summary, recommendation))
    record = {
        "steps": len(profile.global_norms), "global_norms": profile.global_norms,
        "module_norms": profile.module_norms,
        "verdicts": [{"kind": v.kind, "explanation": v.explanation, "fix": v.fix}
                     for v in profile.verdicts()],
        "recommended": None if recommendation is None else list(recommendation.specs),
        "regime": None if recommendation is None else recommendation.regime,
        "not_recommended": None if recommendation is None else [
            {"spec": spec, "why": why} for spec, why in recommendation.not_recommended],
        "norm_rule": None if recommendation is None else recommendation.norm_rule,
        "value_rule": None if recommendation is None else recommendation.value_rule,
        "norm_threshold": None if recommendation is None else recommendation.norm_threshold,
        "value_threshold": None if recommendation is None else recommendation.value_threshold,
    }
    write_text(run_dir / "profile.json", json.dumps(json_safe(record), indent=2) + "\n")
    from gradclip.app.experiments.plots import plot_profile

    figure = plot_profile(profile.global_norms, profile.module_norms,
                          torch.cat(profile.magnitudes).tolist() if profile.magnitudes else [],
                          recommendation, run_dir / "gradient_histogram.png")
    print(f"wrote {run_dir / 'profile.json'} and {figure}")
    return 0
