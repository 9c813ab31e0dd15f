"""``gradclip profile``'s measurement: a training run with the monitor on every step.

The run is a normal ``gradclip train`` run (``--clip none`` by default, or a loose clip), with
a ``ProfilingMonitor`` reading the raw gradients of every step before the clipper. Its
reports and a sample of gradient elements go into a ``GradientProfile``, from which the
distribution table, the verdicts and the recommended thresholds are made.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradclip.app.experiments.diagnosis import run_setting
from gradclip.app.training.loggers import StepLogger
from gradclip.app.training.runs import NewRun, create_run
from gradclip.app.training.trainer import Trainer
from gradclip.monitor import (
    GradientMonitor,
    GradientReport,
    Recommendation,
    Verdict,
    recommend_thresholds,
)
from gradclip.monitor.fixes import RunSetting
from gradclip.monitor.recommend import (
    AGC_SPEC,
    before_divergence,
    percentile_of,
    sample_element_magnitudes,
)
from gradclip.stats import ClipStats

SAMPLES_PER_STEP = 512  # gradient elements drawn per step for the value threshold
SHOWN_PERCENTILES = (1, 10, 50, 90, 99)


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
    setting: RunSetting = field(default_factory=RunSetting)

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


class ProfilingMonitor(GradientMonitor):
    """A ``GradientMonitor`` reporting every step into a profile, with raw gradient samples."""

    def __init__(self, model: nn.Module, profile: GradientProfile):
        super().__init__(model, every=1)
        self.model, self.profile = model, profile

    def step(self, stats: ClipStats | None = None) -> GradientReport | None:
        report = super().step(stats)
        if report is not None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            self.profile.add(report, grads)
        return report


def measure(new: NewRun, loggers: list[StepLogger]
            ) -> tuple[Path, dict[str, Any], GradientProfile]:
    """Train the run with the monitor on every step; its folder, summary and profile."""
    with create_run(new) as current:
        trainer = Trainer(current.run_dir, current.config, current.task)
        seed = current.config.train.seed
        profile = GradientProfile(generator=torch.Generator().manual_seed(seed),
                                  setting=run_setting(current.config))
        monitor = ProfilingMonitor(trainer.model, profile)
        summary = trainer.train(monitor=monitor, loggers=loggers)
        monitor.close()
    return current.run_dir, summary, profile


def recommend(profile: GradientProfile, percentile: float, value_percentile: float
              ) -> Recommendation | None:
    """Thresholds and specs from the steps before any divergence; ``None`` when there are
    none. The clipped-step bound uses the lr of SGD runs only (Adam's step is ~lr anyway)."""
    setting = profile.setting
    lr = setting.lr if setting.optimizer == "sgd" else None
    magnitudes = torch.cat(profile.magnitudes) if profile.magnitudes else None
    try:
        return recommend_thresholds(profile.global_norms, magnitudes, percentile,
                                    value_percentile=value_percentile,
                                    element_count=profile.element_count or None, lr=lr,
                                    magnitudes_per_step=SAMPLES_PER_STEP)
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
    lines += recommendation_lines(recommendation)
    return "\n".join(lines)


def recommendation_lines(recommendation: Recommendation | None) -> list[str]:
    """The ``Recommended:`` line (one line of ``--clip SPEC``, best first; every number named
    by its rule after it), then one line per spec left out and why."""
    if recommendation is None:
        return [f"Recommended: --clip {AGC_SPEC}   (no finite gradient norm was observed, so "
                "no threshold could be measured; lower the learning rate and profile again)"]
    r = recommendation
    rules = []
    if any(spec.startswith(("norm:", "spikeskip+norm:")) for spec in r.specs):
        rules.append(f"norm: global-norm {r.norm_rule}")
    if any(spec.startswith("value:") for spec in r.specs):
        rules.append(f"value: {r.value_rule}")
    rules.append(f"{AGC_SPEC}: unit-wise, validated by benchmarks.advice")
    if any(spec.startswith("spikeskip+") for spec in r.specs):
        rules.append("spikeskip: skips the isolated spikes the profile showed")
    lines = [f"{r}   ({'; '.join(rules)})"]
    lines += [f"not recommended here: --clip {spec} ({why})" for spec, why in r.not_recommended]
    return lines

