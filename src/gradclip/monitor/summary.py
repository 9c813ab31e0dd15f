"""The readable text summary of a ``GradientReport`` (what ``str(report)`` prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradclip.monitor.report import GradientReport

BAR_WIDTH = 24


def _bar(value: float, largest: float) -> str:
    """A bar on a log scale spanning six decades below ``largest``."""
    if not (math.isfinite(value) and value > 0 and largest > 0):
        return "!" if not math.isfinite(value) else ""
    decades = math.log10(largest / value)
    return "#" * max(1, round(BAR_WIDTH * (1 - min(decades, 6) / 6)))


def _profile_line(values: Sequence[float]) -> str:
    """A few evenly spaced (step, norm) points of a time profile."""
    count = len(values)
    picks = sorted({0, count // 4, count // 2, (3 * count) // 4, count - 1})
    return ", ".join(f"t={i + 1}: {values[i]:.2g}" for i in picks)


def format_report(report: GradientReport) -> str:
    """Headline, norms, per-module table, time profiles, then the verdicts with fixes."""
    lines = [f"gradclip monitor, step {report.step}: {report.verdict.kind.upper()}"]
    facts = [f"global grad norm {report.global_norm:.4g}"]
    if report.threshold is not None:
        facts.append(f"threshold {report.threshold:.4g}")
    if report.clip_fraction is not None:
        facts.append(f"clipped on {report.clip_fraction:.0%} of {report.stats_steps} steps")
    if report.update_ratio is not None:
        at = report.update_ratio_step
        facts.append(f"update/weight ratio {report.update_ratio:.2g}"
                     + ("" if at in (None, report.step) else f" (measured at step {at})"))
    lines.append("  " + ", ".join(facts))
    modules = report.module_norms
    largest = max((n for n in modules.values() if math.isfinite(n)), default=0.0)
    width = max(len(name) for name in modules)
    lines.append("  gradient norm per module (bar: log scale, 6 decades):")
    lines.extend(f"    {name:<{width}}  {norm:9.3g}  {_bar(norm, largest)}"
                 for name, norm in modules.items())
    for name, profile in report.time_profiles.items():
        if profile:
            lines.append(f"  gradient reaching each time step of {name}: {_profile_line(profile)}")
    lines.extend("  " + str(verdict).replace("\n", "\n  ") for verdict in report.verdicts)
    return "\n".join(lines)
