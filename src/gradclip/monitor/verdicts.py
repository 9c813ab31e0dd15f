"""Gradient-health verdicts in plain language, each with the fix to try.

Four kinds, most severe first: ``non-finite``, ``exploding``, ``vanishing``, ``healthy``.
Each rule reads plain Python numbers that the report has already materialised.

Rules (defaults in ``VerdictRules``):

- *non-finite*: some step since the last report had a NaN/Inf gradient.
- *exploding*, spike: the largest global norm since the last report exceeds the median of
  the earlier window by ``spike_z`` robust standard deviations (``1.4826 * MAD``) and is at
  least ``spike_factor`` times that median.
- *exploding*, growth: over the window, the median norm of the last quarter is
  ``growth_factor`` times that of the first quarter (geometric growth over training).
- *exploding* / *vanishing* in time: the gradient reaching the first time step of a
  recurrent layer is above ``1 / vanishing_ratio`` / below ``vanishing_ratio`` times the one
  reaching the last step.
- *vanishing* / *exploding* in depth: the first module's gradient norm is below
  ``vanishing_ratio`` / above ``1 / vanishing_ratio`` times the last module's.

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks" (exploding and vanishing gradients, clipping as the fix for the former only).
    Hampel (1974), "The influence curve and its role in robust estimation" (median/MAD).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradclip.monitor import fixes
from gradclip.monitor.fixes import RunSetting

KINDS = ("non-finite", "exploding", "vanishing", "healthy")
MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation

FIX_NONFINITE = (
    "lower the learning rate; clip with a non-finite policy that skips the step "
    "(clip_grad_norm_(..., nonfinite='skip'), or --clip norm:... in the CLI); check the "
    "named layer for log(0), division by zero or overflow (fp16: use a GradScaler)")
FIX_EXPLODING = (
    "clip the gradient (Pascanu et al. 2013): `gradclip profile` measures the norms and "
    "prints what to use ('Recommended: --clip ...'); lowering the learning rate also helps")
FIX_VANISHING = fixes.vanishing_fix(RunSetting())  # the cell unknown


@dataclass(frozen=True)
class Verdict:
    """One diagnosis: ``kind`` (see ``KINDS``), what was seen, what to do, and the numbers.

    Attributes:
        kind: the diagnosis, one of ``KINDS``: ``"non-finite"``, ``"exploding"``,
            ``"vanishing"`` or ``"healthy"``.
        explanation: what was seen, in a sentence with its numbers.
        fix: what to try.
        evidence: the numbers behind it, by name.
    """

    kind: str
    explanation: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind.upper()}: {self.explanation}\n  fix: {self.fix}"


@dataclass(frozen=True)
class VerdictRules:
    """Thresholds of the verdict rules (see the module docstring)."""

    spike_z: float = 6.0
    spike_factor: float = 2.0
    growth_factor: float = 100.0
    vanishing_ratio: float = 1e-3
    min_history: int = 8


HEALTHY = Verdict("healthy", "gradient norms are finite, stable over steps, and reach every "
                  "layer and time step within three orders of magnitude",
                  "nothing to fix; clipping is optional insurance here")


def nonfinite_verdict(steps: int, first_step: int | None, parameters: Sequence[str]
                      ) -> Verdict | None:
    """Non-finite when any step had a NaN/Inf gradient; names where it first appeared."""
    if steps == 0:
        return None
    where = (f"first at step {first_step} in {parameters[0]}" if parameters
             else f"first at step {first_step} (in the clipper's norm; gradients were zeroed)")
    others = f" (also {', '.join(parameters[1:4])}{'...' if len(parameters) > 4 else ''})" \
        if len(parameters) > 1 else ""
    return Verdict("non-finite", f"{steps} step(s) had NaN/Inf gradients, {where}{others}.",
                   FIX_NONFINITE, {"steps": steps, "first_step": first_step,
                                   "parameters": list(parameters)})


def spike_verdict(recent: Sequence[float], baseline: Sequence[float], rules: VerdictRules,
                  clip_fraction: float | None = None) -> Verdict | None:
    """Exploding when the largest recent norm is far above the baseline's robust spread."""
    recent = [x for x in recent if math.isfinite(x)]
    baseline = [x for x in baseline if math.isfinite(x)]
    if not recent or len(baseline) < rules.min_history:
        return None
    peak = max(recent)
    median = statistics.median(baseline)
    spread = MAD_TO_STD * statistics.median(abs(x - median) for x in baseline)
    if not (peak > median + rules.spike_z * spread and peak > rules.spike_factor * median):
        return None
    z = (peak - median) / spread if spread > 0 else math.inf
    return Verdict(
        "exploding",
        f"the global gradient norm spiked to {peak:.3g}, {peak / median:.3g}x the median "
        f"{median:.3g} of the previous {len(baseline)} steps (robust z = {z:.3g}).",
        _exploding_fix(clip_fraction),
        {"peak": peak, "median": median, "robust_z": z})


def growth_verdict(history: Sequence[float], rules: VerdictRules,
                   clip_fraction: float | None = None) -> Verdict | None:
    """Exploding when the norm grew ``growth_factor``-fold across the window."""
    history = [x for x in history if math.isfinite(x)]
    quarter = len(history) // 4
    if len(history) < rules.min_history or quarter == 0:
        return None
    early = statistics.median(history[:quarter])
    late = statistics.median(history[-quarter:])
    if not late > rules.growth_factor * early:
        return None
    return Verdict(
        "exploding",
        f"the global gradient norm grew {late / early:.3g}x over the last {len(history)} "
        f"steps (median {early:.3g} -> {late:.3g}): training is diverging.",
        _exploding_fix(clip_fraction), {"early_median": early, "late_median": late})


def _exploding_fix(clip_fraction: float | None) -> str:
    if clip_fraction:
        return (f"your clipper already clipped {clip_fraction:.0%} of steps, which bounds each "
                f"update; if the loss still diverges, lower its threshold or the learning rate")
    return FIX_EXPLODING


def time_verdicts(profiles: Mapping[str, Sequence[float]], rules: VerdictRules,
                  cells: dict[str, str] | None = None, layers: int | None = None
                  ) -> list[Verdict]:
    """Vanishing/exploding through time from the per-step gradient norms of recurrent layers.

    ``cells`` names each layer's cell (torch's ``mode``: ``"RNN_TANH"``, ``"LSTM"``, ...), so
    that the fix fits it (no gated cell is suggested to a gated cell); ``layers``, the
    number of stacked recurrent layers (no advice about stacking for one).
    """
    verdicts: list[Verdict] = []
    cells = cells or {}
    ratios = {name: profile[0] / profile[-1] for name, profile in profiles.items()
              if len(profile) > 1 and profile[-1] > 0 and math.isfinite(profile[-1])}
    if not ratios:
        return verdicts
    weakest = min(ratios, key=ratios.__getitem__)
    if ratios[weakest] < rules.vanishing_ratio:
        profile = profiles[weakest]
        reach = signal_reach(profile, rules.vanishing_ratio)
        verdicts.append(Verdict(
            "vanishing",
            f"in {weakest}, the gradient reaching time step 1 of {len(profile)} is "
            f"{_times(ratios[weakest])} the one reaching the last step; it stays within "
            f"{rules.vanishing_ratio:g}x of the last only over the last {reach} steps, so "
            f"dependencies longer than ~{reach} steps cannot be learnt.",
            fixes.vanishing_fix(RunSetting(cell=cells.get(weakest), layers=layers)),
            {"module": weakest, "first_to_last": ratios[weakest], "reach": reach,
             "steps": len(profile)}))
    verdicts.extend(growth_in_time(profiles, rules))
    return verdicts


def growth_in_time(profiles: Mapping[str, Sequence[float]], rules: VerdictRules) -> list[Verdict]:
    """Exploding through time: step 1 receives ``1 / vanishing_ratio`` x the profile's median.

    The median, not the last step, is the reference: under pooling over time (the text
    model) every step receives its own gradient and the last steps of a padded batch
    receive almost none, so a first/last ratio reads padding as explosion.
    """
    ratios = {name: profile[0] / statistics.median(profile) for name, profile in profiles.items()
              if len(profile) > 1 and statistics.median(profile) > 0
              and math.isfinite(profile[0])}
    if not ratios:
        return []
    strongest = max(ratios, key=ratios.__getitem__)
    if not ratios[strongest] > 1 / rules.vanishing_ratio:
        return []
    profile = profiles[strongest]
    return [Verdict(
        "exploding",
        f"in {strongest}, the gradient grows going back in time: step 1 receives "
        f"{ratios[strongest]:.3g}x the median gradient of its {len(profile)} steps (time "
        f"profile {profile[0]:.2g} at step 1, {profile[-1]:.2g} at the last; geometric "
        f"growth with sequence length).",
        FIX_EXPLODING, {"module": strongest, "first_to_median": ratios[strongest]})]


def _times(ratio: float) -> str:
    return f"{ratio:.2g}x" if ratio > 0 else "0x (below the float range of)"


def signal_reach(profile: Sequence[float], ratio: float) -> int:
    """How many final time steps receive at least ``ratio`` times the last step's gradient."""
    floor = ratio * profile[-1]
    reach = 0
    for value in reversed(profile):
        if not value >= floor:
            break
        reach += 1
    return reach


def depth_verdict(module_norms: dict[str, float], rules: VerdictRules,
                  setting: RunSetting | None = None) -> Verdict | None:
    """Vanishing (exploding) when the first module's gradient is far below (above) the last's.

    ``setting`` (the cell, optimizer, ...) words the fix for the model when known.
    """
    norms = [(name, n) for name, n in module_norms.items() if math.isfinite(n)]
    if len(norms) < 2 or not norms[-1][1] > 0:
        return None
    (first, first_norm), (last, last_norm) = norms[0], norms[-1]
    ratio = first_norm / last_norm
    if ratio > 1 / rules.vanishing_ratio:
        return Verdict(
            "exploding",
            f"the first module ({first}) receives a gradient norm of {first_norm:.3g}, "
            f"{ratio:.3g}x the last module's ({last}: {last_norm:.3g}): the gradient grows "
            f"geometrically with depth.", FIX_EXPLODING,
            {"first_module": first, "last_module": last, "first_to_last": ratio})
    if ratio >= rules.vanishing_ratio:
        return None
    return Verdict(
        "vanishing",
        f"the first module ({first}) receives a gradient norm of {first_norm:.3g}, "
        f"{ratio:.2g}x the last module's ({last}: {last_norm:.3g}); early layers barely learn.",
        fixes.vanishing_fix(setting or RunSetting()),
        {"first_module": first, "last_module": last, "first_to_last": ratio})


def by_severity(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts most severe first; ``[HEALTHY]`` when there are none."""
    return sorted(verdicts, key=lambda v: KINDS.index(v.kind)) or [HEALTHY]
