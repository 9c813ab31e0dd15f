"""Clipping thresholds recommended from measured gradients, as ready-to-use spec strings.

The thresholds:

- norm threshold: the ``percentile``-th percentile (default 90) of the finite global norms
  observed without clipping, over the steps before the norm diverged (the first NaN/Inf,
  or the first norm above ``DIVERGENCE_FACTOR`` x the smallest of the first 10);
- value threshold: the ``value_percentile``-th percentile (default 99) of sampled
  per-element magnitudes ``|g|``, capped at ``norm_threshold / sqrt(n)`` for ``n`` gradient
  elements (a value clip at ``v`` bounds the norm by ``v * sqrt(n)`` only).

Which specs are recommended (``specs``, best first) follows a rule calibrated against
outcomes (``python -m benchmarks.advice``: 3 seeds of every recommendation on the quick
benchmark suite's settings and the README's adding problem):

- ``agc:0.01`` always: it succeeded on every setting of that grid where anything did
  (adding T=10 at SGD lr 0.15: 3/3 seeds under both schedules; temporal order 3/3), and
  ranked first on the language model and text tasks;
- ``norm:X`` when the unclipped profile *diverged* (clipping is then what the run needs)
  and, when the learning rate is known, the longest clipped SGD step ``lr * X`` is at most
  ``MAX_CLIPPED_STEP``: temporal order (lr 0.1, X = 1) learnt on 3/3 seeds with it, while
  the language model (lr 1.0, X = 8) ranked last. Where the profile did not diverge (the
  adding problem), a p90 threshold stayed finite but learnt on 0 of 3 seeds under both schedules, so it is
  listed under ``not_recommended`` with that reason;
- ``spikeskip+norm:X`` after ``agc:0.01`` where the profile did not diverge but showed
  isolated spikes (a norm ``SPIKE_FACTOR`` x the median of the previous 50 steps): SpikeSkip
  drops the outlier steps and the norm bounds the rest; it learnt the adding problem on
  2/3 (constant lr) and 3/3 (warm-down) seeds;
- ``value:V`` beside ``norm:X`` only when it is consistent with it: the raw percentile
  already within the cap (a capped percentile is a norm bound in disguise);
- ``autoclip:<q>`` and ``zclip`` are never on the line: they need no measurement, but on
  the README's adding problem autoclip:0.1 learnt on 0 of 5 seeds and diverged on 3, and
  zclip learnt on 3 of 5; they are listed under ``not_recommended`` with that caveat.

Percentiles interpolate linearly between order statistics (``torch.quantile``'s rule).

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks", section 3.2.
    Brock, De, Smith & Simonyan (2021), "High-Performance Large-Scale Image Recognition
    Without Normalization" (adaptive gradient clipping, AGC).
    Seetharaman et al. (2020), "AutoClip: Adaptive Gradient Clipping for Source Separation
    Networks" (10th percentile of the norm history).
    Kumar et al. (2025), "ZClip: Adaptive Spike Mitigation for LLM Pre-Training".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradclip.monitor.diagnosis import RunRules, spike_steps

DIVERGENCE_FACTOR = 100.0
DIVERGENCE_BASELINE = 10
MAX_CLIPPED_STEP = 1.0
SPIKE_FACTOR = 5.0
AGC_SPEC = "agc:0.01"
ADAPTIVE_CAVEAT = ("needs no measurement, but on the README's adding problem (T=10, vanilla "
                   "RNN, SGD lr 0.15, 3,000 steps, 5 seeds) autoclip:0.1 learnt it on 0 and "
                   "diverged on 3, zclip learnt it on 3")


@dataclass(frozen=True)
class Recommendation:
    """Recommended thresholds, the ``--clip`` specs to use (best first), and those left out.

    ``regime``: ``"diverged"`` (the unclipped norms diverged within the profile) or
    ``"stable"``; ``kept_steps``: the steps before divergence that the thresholds come from;
    ``not_recommended``: ``(spec, reason)`` pairs.
    """

    norm_threshold: float
    value_threshold: float | None
    percentile: float
    value_percentile: float
    observed_steps: int
    nonfinite_steps: int
    specs: tuple[str, ...]
    regime: str = "stable"
    kept_steps: int = 0
    not_recommended: tuple[tuple[str, str], ...] = ()
    value_rule: str = ""

    @property
    def norm_rule(self) -> str:
        """The rule behind ``norm_threshold``, as a label: ``"p90 of steps 1-150"``."""
        return f"p{self.percentile:g} of steps 1-{self.kept_steps}"

    def __str__(self) -> str:
        return "Recommended: " + " | ".join(f"--clip {spec}" for spec in self.specs)


def before_divergence(norms: Sequence[float], factor: float = DIVERGENCE_FACTOR,
                      baseline: int = DIVERGENCE_BASELINE) -> int:
    """How many first steps precede divergence: the first NaN/Inf norm, or the first norm
    above ``factor`` times the smallest positive of the first ``baseline`` norms (a run can
    explode from its second step, so the early median is no safe reference)."""
    norms = [float(v) for v in norms]
    start = [v for v in norms[:baseline] if math.isfinite(v) and v > 0]
    limit = factor * min(start) if start else math.inf
    for index, value in enumerate(norms):
        if not (math.isfinite(value) and value <= limit):
            return index
    return len(norms)


def spec_number(value: float) -> str:
    """Two significant digits, plainly written: 0.8347 -> ``"0.83"``, 50.5 -> ``"50"``."""
    return f"{float(f'{value:.2g}'):g}"


def percentile_of(values: Tensor, q: float) -> float:
    """The ``q``-th percentile (0..100) of a 1-D tensor, linear interpolation."""
    return float(torch.quantile(values.double(), q / 100.0))


def _check_percentile(q: float, name: str) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 100:
        raise ValueError(f"{name} must be a number strictly between 0 and 100, got {q!r}")
    return float(q)


def recommend_thresholds(norms: Sequence[float] | Tensor,
                         element_magnitudes: Sequence[float] | Tensor | None = None,
                         percentile: float = 90.0, *, value_percentile: float = 99.0,
                         element_count: int | None = None,
                         autoclip_quantile: float = 0.1, lr: float | None = None,
                         magnitudes_per_step: int | None = None) -> Recommendation:
    """Thresholds from observed unclipped global norms (in step order), and the specs to use.

    Non-finite norms are left out (and counted); at least one finite norm before divergence
    is needed. The rule choosing the specs is in the module docstring.

    Args:
        norms: the global gradient norms observed before clipping, one per step, in order.
        element_magnitudes: samples of ``|g|`` for a value threshold, or ``None``.
        percentile: the norm percentile recommended for ``norm:`` (0 < q < 100).
        value_percentile: the ``|g|`` percentile recommended for ``value:``.
        element_count: the number of gradient elements, to cap the value threshold at
            ``norm_threshold / sqrt(element_count)`` (see the module docstring).
        autoclip_quantile: the quantile of the ``autoclip:`` entry of ``not_recommended``.
        lr: the (SGD) learning rate of the run, to bound the clipped step ``lr * X``.
        magnitudes_per_step: how many magnitudes each step contributed, in order, so that
            only those before divergence are used (``None``: all).

    Returns:
        The thresholds, the specs that apply them (best first) and those left out, with why.

    Raises:
        ValueError: a percentile outside (0, 100), or no finite norm.
    """
    q = _check_percentile(percentile, "percentile")
    value_q = _check_percentile(value_percentile, "value_percentile")
    observed = torch.as_tensor(norms, dtype=torch.float64).reshape(-1).cpu()
    kept = before_divergence(observed.tolist())
    finite = observed[:kept][torch.isfinite(observed[:kept])]
    if finite.numel() == 0:
        raise ValueError("no finite gradient norm to recommend a threshold from "
                         f"({observed.numel()} observed)")
    norm_threshold = percentile_of(finite, q)
    if element_magnitudes is not None and magnitudes_per_step:
        element_magnitudes = torch.as_tensor(element_magnitudes)[:kept * magnitudes_per_step]
    raw_value = _value_percentile(element_magnitudes, value_q)
    value_threshold = raw_value
    if raw_value is not None and element_count:
        value_threshold = min(raw_value, norm_threshold / element_count ** 0.5)
    value_rule = ""
    if raw_value is not None:
        value_rule = (f"p{value_q:g} of |g|" if value_threshold == raw_value else
                      f"norm/sqrt(n) cap, n = {element_count} (p{value_q:g} of |g| is "
                      f"{spec_number(raw_value)})")
    regime = "diverged" if kept < observed.numel() else "stable"
    spikes = len(spike_steps(finite.tolist(), RunRules(spike_factor=SPIKE_FACTOR)))
    specs, left_out = _choose_specs(norm_threshold, raw_value, value_threshold, regime, lr,
                                    q, autoclip_quantile, spikes)
    return Recommendation(norm_threshold, value_threshold, q, value_q, observed.numel(),
                          int((~torch.isfinite(observed)).sum()), tuple(specs), regime, kept,
                          tuple(left_out), value_rule)


def _value_percentile(magnitudes: Sequence[float] | Tensor | None, q: float) -> float | None:
    if magnitudes is None:
        return None
    magnitudes = torch.as_tensor(magnitudes, dtype=torch.float64).reshape(-1).cpu()
    magnitudes = magnitudes[torch.isfinite(magnitudes)].abs()
    if not (magnitudes.numel() and bool((magnitudes > 0).any())):
        return None
    return percentile_of(magnitudes, q)


def _choose_specs(norm: float, raw_value: float | None, value: float | None, regime: str,
                  lr: float | None, q: float, autoclip_quantile: float, spikes: int
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """The rule of the module docstring: the specs (best first) and those left out, why."""
    norm_spec = f"norm:{spec_number(norm)}"
    specs, left_out = [], []
    if regime != "diverged":
        left_out.append((norm_spec, f"p{q:g} of the global norm; where the unclipped profile "
                         "did not diverge, such a threshold stayed finite but learnt the "
                         "adding problem on 0 of 3 seeds under both schedules (benchmarks.advice)"))
    elif lr is not None and lr * norm > MAX_CLIPPED_STEP:
        left_out.append((norm_spec, f"p{q:g} of the global norm before divergence; a clipped "
                         f"step lr x {spec_number(norm)} = {lr * norm:.2g} is longer than "
                         f"{MAX_CLIPPED_STEP:g} (the benchmark's language model ranked this "
                         "last)"))
    else:
        specs.append(norm_spec)
    specs.append(AGC_SPEC)
    if regime != "diverged" and spikes:
        specs.append(f"spikeskip+{norm_spec}")
    if specs[0] == norm_spec and value is not None and raw_value is not None \
            and raw_value <= value:
        specs.append(f"value:{spec_number(value)}")
    left_out += [(f"autoclip:{autoclip_quantile:g}", ADAPTIVE_CAVEAT),
                 ("zclip", ADAPTIVE_CAVEAT)]
    return specs, left_out


def sample_element_magnitudes(grads: Sequence[Tensor], count: int,
                              generator: torch.Generator | None = None) -> Tensor:
    """``count`` gradient magnitudes ``|g|`` drawn uniformly over all elements (all if fewer)."""
    flat = torch.cat([g.detach().reshape(-1).float().cpu() for g in grads])
    if flat.numel() <= count:
        return flat.abs()
    index = torch.randint(flat.numel(), (count,), generator=generator)
    return flat[index].abs()
