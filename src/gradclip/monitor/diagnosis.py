"""Verdicts about a whole run, from its histories: loss, gradient norm, clips, skips, profiles.

The step-level report (``GradientReport``) reads the gradients
of one step; a run is judged by what happened to its loss. ``diagnose_run`` combines:

- the loss history, cut into ``chunks`` pieces and summarised by each piece's median:
  *diverged* when the loss became NaN/Inf (and the step was not skipped) or ended
  ``divergence_factor`` x above its first value, or above ``ended_above_factor`` x its first
  value and ``regression_factor`` x its best piece; *unstable* when it learnt and then ended
  (the final validation loss too, when it is ``regression_factor`` x above the last
  training piece: a jump at the end) ``regression_factor`` x above its best quarter;
  *diverged* too when the median piece is ``above_start_factor`` x above the first loss (it
  ran above its start); *stalled* when no piece got below
  ``stall_ratio`` x the first piece (and the task, if judged, was not learnt); *learning*
  when it fell but the task's own criterion was not met;
- the norm history: isolated *spikes* (a norm ``spike_factor`` x the median of the previous
  ``spike_window`` steps) and *growth* (the last piece's median ``growth_factor`` x the
  first's);
- the clip and skip rates: a fixed norm threshold firing on most steps of a run that did
  not blow up is *too tight* (a value clip or AGC fires on almost every step by design),
  and so is a clipper that skipped ``skip_fraction`` of the steps;
- the time profiles and depth ratios of the last report: *vanishing* is said only with
  that evidence (the ratio and how many final steps the signal reaches, in the text), and a
  module whose gradient was exactly 0 on every logged step (at least ``zeroed_min_logs``)
  is *zeroed*, not vanishing.

Never *healthy* when the loss diverged, ended far above its start, stalled, or the task's
criterion was not met.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gradclip.monitor import fixes
from gradclip.monitor.fixes import RunSetting
from gradclip.monitor.verdicts import Verdict, VerdictRules, depth_verdict, signal_reach

RUN_KINDS = ("diverged", "non-finite", "unstable", "zeroed", "vanishing", "stalled",
             "exploding", "tight", "learning", "healthy")


@dataclass(frozen=True)
class RunRules:
    """Thresholds of the run-level rules (see the module docstring)."""

    divergence_factor: float = 10.0
    ended_above_factor: float = 2.0
    above_start_factor: float = 1.5
    regression_factor: float = 3.0
    stall_ratio: float = 0.8
    chunks: int = 20
    spike_factor: float = 10.0
    spike_window: int = 50
    growth_factor: float = 100.0
    vanishing_ratio: float = 1e-3
    skip_fraction: float = 0.1
    zeroed_min_logs: int = 3


@dataclass(frozen=True)
class RunHistory:
    """What a run recorded, one entry per optimizer step unless said otherwise.

    ``module_norms``: per module, its gradient norm at each logged step; ``time_profiles``:
    per recurrent module, the gradient reaching each time step at the last report;
    ``final_loss``: the final validation loss (else the training loss is used); ``success``:
    the task's own criterion, ``None`` when the task has none.
    """

    losses: Sequence[float]
    grad_norms: Sequence[float] = ()
    clipped: Sequence[bool] = ()
    skipped: Sequence[bool] = ()
    module_norms: Mapping[str, Sequence[float]] = field(default_factory=dict)
    time_profiles: Mapping[str, Sequence[float]] = field(default_factory=dict)
    final_loss: float | None = None
    success: bool | None = None

    @property
    def clip_fraction(self) -> float | None:
        return sum(map(bool, self.clipped)) / len(self.clipped) if self.clipped else None


def chunk_medians(values: Sequence[float], chunks: int) -> list[float]:
    """The median of each of ``chunks`` consecutive pieces (fewer for short runs); NaN kept."""
    count = min(chunks, len(values))
    bounds = [round(i * len(values) / count) for i in range(count + 1)]
    return [_median(values[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if len(finite) == len(values) else math.nan


def diagnose_run(history: RunHistory, setting: RunSetting | None = None,
                 rules: RunRules | None = None) -> list[Verdict]:
    """Every run-level verdict that applies, most severe first; ``[healthy]`` only when the
    loss fell and nothing else applies.

    Args:
        history: the run's recorded histories.
        setting: the run's cell, optimizer, lr and clipper, for the fixes.
        rules: the thresholds.
    """
    setting, rules = setting or RunSetting(), rules or RunRules()
    if not history.losses:
        raise ValueError("a run diagnosis needs at least one recorded loss")
    loss = loss_verdict(history, setting, rules)
    zeroed = zeroed_verdict(history, setting, rules)
    found = [loss, zeroed]
    if zeroed is None:
        found.append(vanishing_verdict(history, setting, rules))
    found.append(norm_verdict(history, setting, rules))
    if loss is None or loss.kind not in ("diverged", "unstable"):
        found.append(tight_verdict(history, setting, rules))
    kept = sorted((v for v in found if v is not None), key=lambda v: RUN_KINDS.index(v.kind))
    return kept or [healthy_verdict(history, rules)]


def loss_verdict(history: RunHistory, setting: RunSetting, rules: RunRules) -> Verdict | None:
    """Diverged, non-finite (skipped), unstable or stalled, from the loss history."""
    losses = list(history.losses)
    skipped = list(history.skipped) or [False] * len(losses)
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    unskipped = [i for i in bad if not (i < len(skipped) and skipped[i])]
    first = losses[0]
    final = history.final_loss if history.final_loss is not None else losses[-1]
    pieces = chunk_medians(losses, rules.chunks)
    best = min((v for v in pieces if math.isfinite(v)), default=math.nan)
    if unskipped or not math.isfinite(final) or final > rules.divergence_factor * first or (
            final > rules.ended_above_factor * first and final > rules.regression_factor * best):
        return diverged_verdict(first, final, unskipped, setting)
    typical = statistics.median(pieces) if all(map(math.isfinite, pieces)) else math.nan
    if typical > rules.above_start_factor * first:
        return Verdict(
            "diverged", f"the loss spent most of the run above its first value {first:.3g} "
            f"(median over the run {typical:.3g}, at the end {final:.3g}): training blew up.",
            fixes.diverged_fix(setting), {"first_loss": first, "median_loss": typical,
                                          "final_loss": final, "nonfinite_step": None})
    if bad:
        return Verdict("non-finite", f"{len(bad)} step(s) had a NaN/Inf loss, first at step "
                       f"{bad[0] + 1}; they were skipped and the run went on.",
                       fixes.nonfinite_fix(setting), {"steps": len(bad), "first": bad[0] + 1})
    # quarters, not the fine pieces: a text's passages differ in difficulty (lm), so the
    # best 5% of a healthy run can be far below its end. The validation loss counts when it
    # is also far above the last training piece (a jump at the end), not for a held-out
    # text that is simply harder than the training text (a generalisation gap).
    quarters = chunk_medians(losses, 4)
    best_quarter = min(quarters)
    jumped = final > rules.regression_factor * pieces[-1]
    end = max(final, quarters[-1]) if jumped else quarters[-1]
    if best <= rules.stall_ratio * pieces[0] and end > rules.regression_factor * best_quarter:
        which = "final validation loss" if jumped and end == final else "loss"
        return Verdict(
            "unstable", f"the loss fell to {best_quarter:.3g} (median of its best quarter), "
            f"then the {which} ended at {end:.3g}, {end / best_quarter:.3g}x its best: "
            "training was thrown off.", fixes.exploding_fix(setting),
            {"best": best_quarter, "final": end})
    if best > rules.stall_ratio * pieces[0] and not history.success:
        return Verdict(
            "stalled", f"the loss never fell below {rules.stall_ratio:g}x its start (median "
            f"{pieces[0]:.3g} over the first {_piece(len(losses), rules)}, best {best:.3g}, "
            f"last {pieces[-1]:.3g}): the model is not learning.",
            fixes.stalled_fix(setting, history.clip_fraction),
            {"first": pieces[0], "best": best, "final": pieces[-1]})
    if history.success is False:
        return Verdict(
            "learning", f"the loss fell from {pieces[0]:.3g} to {pieces[-1]:.3g} (medians of "
            f"the first and last {_piece(len(losses), rules)}) without diverging, but the "
            "task's criterion was not met.", fixes.learning_fix(setting),
            {"first": pieces[0], "final": pieces[-1]})
    return None


def _piece(steps: int, rules: RunRules) -> str:
    size = max(1, round(steps / min(rules.chunks, steps)))
    return f"{size} steps" if size > 1 else "step"


def diverged_verdict(first: float, final: float, unskipped: list[int],
                     setting: RunSetting) -> Verdict:
    """The loss went NaN/Inf or ended far above its start."""
    if unskipped:
        seen = f"the loss became NaN/Inf at step {unskipped[0] + 1} and the weights with it"
    else:
        seen = (f"the loss ended at {final:.3g}, {final / first:.3g}x its first value "
                f"{first:.3g}" if math.isfinite(final) else "the final loss is not finite")
    return Verdict("diverged", f"{seen}: training diverged.", fixes.diverged_fix(setting),
                   {"first_loss": first, "final_loss": final,
                    "nonfinite_step": unskipped[0] + 1 if unskipped else None})


def zeroed_verdict(history: RunHistory, setting: RunSetting, rules: RunRules
                   ) -> Verdict | None:
    """A module whose gradient was exactly 0 on every logged step (a cut, not vanishing)."""
    dead = [name for name, norms in history.module_norms.items()
            if len(norms) >= rules.zeroed_min_logs and all(n == 0 for n in norms)]
    if not dead:
        return None
    steps = len(history.module_norms[dead[0]])
    return Verdict(
        "zeroed", f"the gradient of {', '.join(dead)} was exactly 0 on all {steps} logged "
        "steps: no training signal reached it at all. That is not a gradient vanishing "
        "across time steps (which shrinks it, never to exactly 0) but one cut to zero.",
        fixes.zeroed_fix(setting), {"modules": dead, "logged_steps": steps})


def vanishing_verdict(history: RunHistory, setting: RunSetting, rules: RunRules
                      ) -> Verdict | None:
    """Vanishing in time (first/last step ratio) or in depth (first/last module), with numbers."""
    ratios = {name: p[0] / p[-1] for name, p in history.time_profiles.items()
              if len(p) > 1 and p[-1] > 0 and math.isfinite(p[-1]) and math.isfinite(p[0])}
    if ratios:
        name = min(ratios, key=ratios.__getitem__)
        if ratios[name] < rules.vanishing_ratio:
            profile = history.time_profiles[name]
            reach = signal_reach(profile, rules.vanishing_ratio)
            return Verdict(
                "vanishing", f"in {name}, the gradient reaching time step 1 of {len(profile)} "
                f"is {ratios[name]:.2g}x the one reaching the last step (time profile "
                f"{profile[0]:.2g} -> {profile[-1]:.2g}); it stays within "
                f"{rules.vanishing_ratio:g}x of the last only over the last {reach} steps.",
                fixes.vanishing_fix(setting),
                {"module": name, "first_to_last": ratios[name], "reach": reach})
    last = {name: norms[-1] for name, norms in history.module_norms.items() if norms}
    depth = depth_verdict(last, VerdictRules(vanishing_ratio=rules.vanishing_ratio), setting)
    return depth if depth is not None and depth.kind == "vanishing" else None


def norm_verdict(history: RunHistory, setting: RunSetting, rules: RunRules) -> Verdict | None:
    """Isolated spikes or growth in the gradient norm history."""
    norms = [v for v in history.grad_norms if math.isfinite(v)]
    spikes = spike_steps(norms, rules)
    pieces = chunk_medians(norms, rules.chunks) if norms else []
    if len(pieces) >= 4 and pieces[-1] > rules.growth_factor * pieces[0] > 0:
        return Verdict("exploding", f"the gradient norm grew {pieces[-1] / pieces[0]:.3g}x over "
                       f"the run (median {pieces[0]:.3g} -> {pieces[-1]:.3g}).",
                       fixes.exploding_fix(setting),
                       {"first": pieces[0], "last": pieces[-1]})
    if not spikes or setting.clipping:
        return None
    peak = max(norms[i] for i in spikes)
    return Verdict(
        "exploding", f"{len(spikes)} isolated spike(s) of the gradient norm (>= "
        f"{rules.spike_factor:g}x the median of the previous {rules.spike_window} steps), the "
        f"largest {peak:.3g} at step {max(spikes, key=norms.__getitem__) + 1}, unclipped.",
        fixes.exploding_fix(setting), {"spikes": len(spikes), "peak": peak})


def spike_steps(norms: Sequence[float], rules: RunRules) -> list[int]:
    """Indices of norms ``spike_factor`` x above the median of the ``spike_window`` before."""
    found = []
    for index in range(rules.spike_window, len(norms)):
        baseline = statistics.median(norms[index - rules.spike_window:index])
        if norms[index] > rules.spike_factor * baseline > 0:
            found.append(index)
    return found


def tight_verdict(history: RunHistory, setting: RunSetting, rules: RunRules
                  ) -> Verdict | None:
    """A fixed threshold that fired on most steps, or a clipper skipping many steps."""
    rate = history.clip_fraction
    if fixes.tight(setting, rate):
        return Verdict("tight", f"{setting.clip} clipped {rate:.0%} of the steps.",
                       fixes.tight_fix(setting, rate), {"clip_fraction": rate})
    skipped = sum(map(bool, history.skipped)) / len(history.skipped) if history.skipped else 0
    if skipped < rules.skip_fraction:
        return None
    return Verdict("tight", f"{skipped:.0%} of the steps were skipped (no update): the "
                   "run learnt from the rest only.", fixes.skipping_fix(setting, skipped),
                   {"skip_fraction": skipped})


def healthy_verdict(history: RunHistory, rules: RunRules) -> Verdict:
    """The loss fell, nothing diverged, stalled or vanished; the numbers that say so."""
    pieces = chunk_medians(list(history.losses), rules.chunks)
    rate = history.clip_fraction
    clipped = "" if not rate else f"; clipping fired on {rate:.0%} of the steps"
    return Verdict("healthy", f"the loss fell from {pieces[0]:.3g} to {pieces[-1]:.3g} "
                   f"(medians of the first and last {_piece(len(history.losses), rules)}) with "
                   f"finite, bounded gradients{clipped}.", "nothing to fix",
                   {"first": pieces[0], "final": pieces[-1]})
