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
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradclip.app.cli import HelpFormatter
from gradclip.app.commands import argtypes
from gradclip.app.commands.train import (
    add_model_options,
    add_optimization_options,
    add_task_options,
    prepare_new_run,
)
from gradclip.app.loop import Trainer
from gradclip.app.monitoring import MonitoredClipper
from gradclip.app.run_dir import json_safe, timestamped_dir
from gradclip.monitor import (
    GradientMonitor,
    GradientReport,
    Recommendation,
    Verdict,
    recommend_thresholds,
)
from gradclip.monitor.recommend import percentile_of, sample_element_magnitudes

DEFAULT_STEPS = 300
SAMPLES_PER_STEP = 512  # gradient elements drawn per step for the value threshold
SHOWN_PERCENTILES = (1, 10, 50, 90, 99)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="measure gradient norms without clipping and recommend thresholds",
        formatter_class=HelpFormatter, description=__doc__.split("\n")[0] + (
            "\n\nexample:\n  gradclip profile --task adding --seq-len 10 --model rnn "
            "--lr 0.15 --steps 300 --out runs/profile"))
    add_task_options(parser)
    add_model_options(parser)
    add_optimization_options(parser)
    group = parser.add_argument_group("profile")
    group.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--threads", type=argtypes.positive_int, default=1,
                       help="CPU threads for torch")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/profile-<task>-<model>-<time>)")
    group.add_argument("--percentile", type=percentile_arg, default=90.0,
                       help="percentile of the observed global norms recommended as the norm "
                            "threshold")
    group.add_argument("--value-percentile", type=percentile_arg, default=99.0,
                       help="percentile of sampled per-element magnitudes |g| recommended as "
                            "the value threshold (capped at norm threshold / sqrt(number of "
                            "gradient elements))")
    group.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar: auto shows it when stdout is a terminal")
    parser.set_defaults(run=run, clip="none", steps=DEFAULT_STEPS)
    for action in parser._actions:
        if action.dest == "steps":
            action.help = "optimizer steps to measure"
        if action.dest == "clip":
            action.help = "clipping while measuring: none, or a loose one (e.g. norm:100)"


def percentile_arg(text: str) -> float:
    value = argtypes.positive_float(text)
    if not value < 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


@dataclass
class GradientProfile:
    """What the monitor saw over the run, one entry per step (host numbers)."""

    global_norms: list[float] = field(default_factory=list)
    module_norms: dict[str, list[float]] = field(default_factory=dict)
    magnitudes: list[torch.Tensor] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)
    verdict_counts: Counter = field(default_factory=Counter)
    first_verdicts: dict[str, Verdict] = field(default_factory=dict)
    last_verdicts: list[Verdict] = field(default_factory=list)
    element_count: int = 0

    def add(self, report: GradientReport, grads: list[torch.Tensor]) -> None:
        """Record one step's report and a sample of its raw gradient elements."""
        magnitudes = sample_element_magnitudes(grads, SAMPLES_PER_STEP, self.generator)
        self.element_count = sum(grad.numel() for grad in grads)
        self.global_norms.append(report.global_norm)
        for name, norm in report.module_norms.items():
            self.module_norms.setdefault(name, []).append(norm)
        self.magnitudes.append(magnitudes)
        for verdict in report.verdicts:
            self.verdict_counts[verdict.kind] += 1
            self.first_verdicts.setdefault(verdict.kind, verdict)
        self.last_verdicts = report.verdicts

    def verdicts(self) -> list[Verdict]:
        """Every kind seen, most severe first; time/depth kinds as of the last step."""
        kinds = [k for k in ("non-finite", "exploding") if k in self.first_verdicts]
        found = [self.first_verdicts[k] for k in kinds]
        found += [v for v in self.last_verdicts if v.kind not in kinds]
        return [v for v in found if v.kind != "healthy"] or self.last_verdicts[-1:]


def measure(args: argparse.Namespace) -> tuple[Path, dict[str, Any], GradientProfile]:
    """Train ``--steps`` steps with the monitor on every step; the run's summary and profile."""
    args.resume, args.epochs = None, None
    args.log_every, args.eval_every, args.checkpoint_every = 0, 0, 0
    args.out = args.out or timestamped_dir(f"profile-{args.task}-{args.model}")
    run_dir, config, task = prepare_new_run(args)
    trainer = Trainer(run_dir, config, task)
    profile = GradientProfile(generator=torch.Generator().manual_seed(args.seed))
    monitor = GradientMonitor(trainer.model, every=1)
    trainer.clipper = MonitoredClipper(trainer.clipper, monitor, profile.add)
    progress = {"auto": None, "always": True, "never": False}[args.progress]
    summary = trainer.train(progress=progress)
    monitor.close()
    return run_dir, summary, profile


def before_divergence(norms: list[float], factor: float = 100.0, baseline: int = 10) -> int:
    """How many first steps precede divergence: the first NaN/Inf norm, or the first norm
    above ``factor`` times the smallest of the first ``baseline`` norms (a run can explode
    from its second step, so the early median is no safe reference)."""
    start = [v for v in norms[:baseline] if math.isfinite(v)]
    limit = factor * min(start) if start else math.inf
    for index, value in enumerate(norms):
        if not (math.isfinite(value) and value <= limit):
            return index
    return len(norms)


def recommend(profile: GradientProfile, args: argparse.Namespace) -> Recommendation | None:
    """Thresholds from the steps before any divergence; ``None`` when there are none."""
    kept = before_divergence(profile.global_norms)
    magnitudes = torch.cat(profile.magnitudes[:kept]) if kept else None
    try:
        return recommend_thresholds(profile.global_norms[:kept], magnitudes, args.percentile,
                                    value_percentile=args.value_percentile,
                                    element_count=profile.element_count or None)
    except ValueError:
        return None


def percentile_row(label: str, values: list[float], width: int) -> str:
    finite = torch.tensor([v for v in values if v == v and abs(v) != float("inf")],
                          dtype=torch.float64)
    if finite.numel() == 0:
        return f"  {label:<{width}}  (no finite value)"
    cells = [f"{percentile_of(finite, q):>9.3g}" for q in SHOWN_PERCENTILES]
    return f"  {label:<{width}}  " + " ".join(cells) + f" {float(finite.max()):>9.3g}"


def format_profile(profile: GradientProfile, summary: dict[str, Any],
                   recommendation: Recommendation | None) -> str:
    """Distribution table, verdicts with fixes, and the ``Recommended:`` line."""
    steps = len(profile.global_norms)
    nonfinite = sum(1 for v in profile.global_norms if v != v or abs(v) == float("inf"))
    labels = ["global norm", *(f"{name}" for name in profile.module_norms), "element |g|"]
    width = max(len(label) for label in labels)
    header = " ".join(f"{'p' + str(q):>9}" for q in SHOWN_PERCENTILES) + f" {'max':>9}"
    lines = [f"gradient norms over {steps} steps ({summary['status']}; {nonfinite} non-finite, "
             f"{summary['clipped_steps']} clipped):",
             f"  {'':<{width}}  {header}",
             percentile_row("global norm", profile.global_norms, width)]
    lines += [percentile_row(name, norms, width) for name, norms in profile.module_norms.items()]
    magnitudes = torch.cat(profile.magnitudes).tolist() if profile.magnitudes else []
    lines.append(percentile_row("element |g|", magnitudes, width))
    lines.append("verdict:")
    lines += [f"  ({profile.verdict_counts[v.kind]} of {steps} steps) "
              + str(v).replace("\n", "\n  ") for v in profile.verdicts()]
    kept = before_divergence(profile.global_norms)
    if kept < steps:
        lines.append(f"note: the gradient norm diverged at step {kept + 1}; the thresholds "
                     f"below come from the {kept} step(s) before it")
    if recommendation is None:
        lines.append("Recommended: --clip autoclip:0.1 | --clip zclip (no finite gradient norm "
                     "was observed; lower the learning rate and profile again)")
    else:
        lines.append(f"{recommendation}   (norm: p{recommendation.percentile:g} of the global "
                     f"norm; value: p{recommendation.value_percentile:g} of |g|, at most "
                     f"norm / sqrt({profile.element_count}))")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    run_dir, summary, profile = measure(args)
    recommendation = recommend(profile, args)
    print(format_profile(profile, summary, recommendation))
    record = {
        "steps": len(profile.global_norms), "global_norms": profile.global_norms,
        "module_norms": profile.module_norms,
        "verdicts": [{"kind": v.kind, "explanation": v.explanation, "fix": v.fix}
                     for v in profile.verdicts()],
        "recommended": None if recommendation is None else list(recommendation.specs),
        "norm_threshold": None if recommendation is None else recommendation.norm_threshold,
        "value_threshold": None if recommendation is None else recommendation.value_threshold,
    }
    (run_dir / "profile.json").write_text(json.dumps(json_safe(record), indent=2) + "\n")
    from gradclip.app.plots import plot_profile

    figure = plot_profile(profile.global_norms, profile.module_norms,
                          torch.cat(profile.magnitudes).tolist() if profile.magnitudes else [],
                          recommendation, run_dir / "gradient_histogram.png")
    print(f"wrote {run_dir / 'profile.json'} and {figure}")
    return 0
