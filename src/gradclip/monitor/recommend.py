"""Clipping thresholds recommended from measured gradients, as ready-to-use spec strings.

Rules:

- norm threshold: the ``percentile``-th percentile of the finite global norms observed
  without clipping (default 90: ordinary steps pass, the largest 10% and every spike are
  cut; Pascanu et al. suggest a threshold of the order of the average norm. Measured on
  the adding problem, T=10, SGD lr 0.15: the median clipped 82% of steps and learnt more
  slowly than p90);
- value threshold: the ``value_percentile``-th percentile of sampled per-element gradient
  magnitudes ``|g|`` (default 99: only the largest 1% of elements are clamped), capped at
  ``norm_threshold / sqrt(n)`` when the number ``n`` of gradient elements is known: a value
  clip at ``v`` bounds the gradient norm by ``v * sqrt(n)`` only, so the cap keeps that bound
  at the norm threshold (a value threshold must shrink as the model grows);
- ``autoclip:<quantile>`` adapts the norm threshold to the run's own history, and ``zclip``
  detects spikes by an EMA z-score; neither needs a measured value.

Percentiles interpolate linearly between order statistics (``torch.quantile``'s rule).

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks", section 3.2.
    Seetharaman et al. (2020), "AutoClip: Adaptive Gradient Clipping for Source Separation
    Networks" (10th percentile of the norm history).
    Kumar et al. (2025), "ZClip: Adaptive Spike Mitigation for LLM Pre-Training".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Recommendation:
    """Recommended thresholds and the ``--clip`` spec strings that apply them."""

    norm_threshold: float
    value_threshold: float | None
    percentile: float
    value_percentile: float
    observed_steps: int
    nonfinite_steps: int
    specs: tuple[str, ...]

    def __str__(self) -> str:
        return "Recommended: " + " | ".join(f"--clip {spec}" for spec in self.specs)


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
                         autoclip_quantile: float = 0.1) -> Recommendation:
    """Thresholds from observed unclipped global norms (and optionally ``|g|`` samples).

    Non-finite norms are left out (and counted); at least one finite norm is needed.

    Args:
        norms: the global gradient norms observed before clipping.
        element_magnitudes: samples of ``|g|`` for a value threshold, or ``None``.
        percentile: the norm percentile recommended for ``norm:`` (0 < q < 100).
        value_percentile: the ``|g|`` percentile recommended for ``value:``.
        element_count: the number of gradient elements, to cap the value threshold at
            ``norm_threshold / sqrt(element_count)`` (see the module docstring).
        autoclip_quantile: the quantile of the ``autoclip:`` recommendation.

    Returns:
        The thresholds and the specs that apply them.

    Raises:
        ValueError: a percentile outside (0, 100), or no finite norm.
    """
    q = _check_percentile(percentile, "percentile")
    value_q = _check_percentile(value_percentile, "value_percentile")
    observed = torch.as_tensor(norms, dtype=torch.float64).reshape(-1).cpu()
    finite = observed[torch.isfinite(observed)]
    if finite.numel() == 0:
        raise ValueError("no finite gradient norm to recommend a threshold from "
                         f"({observed.numel()} observed)")
    norm_threshold = percentile_of(finite, q)
    specs = [f"norm:{spec_number(norm_threshold)}"]
    value_threshold = None
    if element_magnitudes is not None:
        magnitudes = torch.as_tensor(element_magnitudes, dtype=torch.float64).reshape(-1).cpu()
        magnitudes = magnitudes[torch.isfinite(magnitudes)].abs()
        if magnitudes.numel() and bool((magnitudes > 0).any()):
            value_threshold = percentile_of(magnitudes, value_q)
            if element_count:
                value_threshold = min(value_threshold, norm_threshold / element_count ** 0.5)
            specs.append(f"value:{spec_number(value_threshold)}")
    specs += [f"autoclip:{autoclip_quantile:g}", "zclip"]
    return Recommendation(norm_threshold, value_threshold, q, value_q, observed.numel(),
                          observed.numel() - finite.numel(), tuple(specs))


def sample_element_magnitudes(grads: Sequence[Tensor], count: int,
                              generator: torch.Generator | None = None) -> Tensor:
    """``count`` gradient magnitudes ``|g|`` drawn uniformly over all elements (all if fewer)."""
    flat = torch.cat([g.detach().reshape(-1).float().cpu() for g in grads])
    if flat.numel() <= count:
        return flat.abs()
    index = torch.randint(flat.numel(), (count,), generator=generator)
    return flat[index].abs()
