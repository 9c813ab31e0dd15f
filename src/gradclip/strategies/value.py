"""Clipping every gradient element into a range (``ValueClip``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradclip.distributed import any_on_any_rank, local_tensors
from gradclip.functional import clamp_grads_, nonempty, pre_clip_norm
from gradclip.nonfinite import check_policy, false_like, zero_if_skipped_
from gradclip.parameters import ParamsLike, check_positive_number
from gradclip.strategies.base import Clipper, ClipStats, limit_tensor
from gradclip.strategies.groups import all_grads, all_named_params, param_groups


def check_value_options(
    clip_value: float | None = None, min: float | None = None, max: float | None = None
) -> dict[str, Any]:
    """Validated ``ValueClip`` options: ``clip_value`` alone, or ``min`` and/or ``max``.

    All three ``None`` (allowed in a group only) leaves the group unclipped.
    """
    if clip_value is not None:
        if min is not None or max is not None:
            raise ValueError(
                f"ValueClip takes clip_value or min/max, not both; got clip_value={clip_value!r}, "
                f"min={min!r}, max={max!r}"
            )
        clip_value = check_positive_number(clip_value, "clip_value", allow_zero=True)
        return {"clip_value": clip_value, "min": None, "max": None}
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound)
        ):
            raise ValueError(f"{name} must be a finite number or None, got {bound!r}")
    if min is not None and max is not None and min > max:
        raise ValueError(f"min must not exceed max, got min={min!r}, max={max!r}")
    return {
        "clip_value": None,
        "min": None if min is None else float(min),
        "max": None if max is None else float(max),
    }


def value_range(options: dict[str, Any]) -> tuple[float, float] | None:
    """``(low, high)`` of the allowed range, or ``None`` when nothing is clipped."""
    if options["clip_value"] is not None:
        return (-options["clip_value"], options["clip_value"])
    if options["min"] is None and options["max"] is None:
        return None
    low = -math.inf if options["min"] is None else options["min"]
    high = math.inf if options["max"] is None else options["max"]
    return (low, high)


class ValueClip(Clipper):
    """Clamp every gradient element into ``[-clip_value, clip_value]``, or ``[min, max]``.

    ``ValueClip(0.5)`` is ``torch.nn.utils.clip_grad_value_``; ``ValueClip(min=-0.1, max=0.5)``
    is the asymmetric form (either bound may be left out). Changes the gradient's direction,
    unlike norm clipping. ``ClipStats.threshold`` is the largest magnitude allowed
    (``max(|min|, |max|)``), ``total_norm`` the global L2 norm before clipping, and
    ``clipped`` whether any element lay outside the range. Groups may override
    ``clip_value``/``min``/``max``; all ``None`` leaves a group unclipped.

    Args:
        clip_value: the symmetric bound: elements are clamped into ``[-clip_value, clip_value]``.
        min: the lower bound of the asymmetric form (``None``: unbounded below).
        max: the upper bound of the asymmetric form (``None``: unbounded above).
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: none of ``clip_value``, ``min``, ``max``; a bound that is not a finite
            number; ``min > max``; or an unknown ``nonfinite``.

    References:
        Mikolov, 2012, "Statistical Language Models Based on Neural Networks" (element-wise
        clipping), as discussed by Pascanu, Mikolov & Bengio, 2013.
    """

    kind = "value"

    def __init__(
        self,
        clip_value: float | None = None,
        *,
        min: float | None = None,
        max: float | None = None,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        options = check_value_options(clip_value, min, max)
        if value_range(options) is None:
            raise ValueError("ValueClip needs clip_value, or min and/or max; got none of them")
        self.clip_value: float | None = options["clip_value"]
        self.min: float | None = options["min"]
        self.max: float | None = options["max"]
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        defaults = {"clip_value": self.clip_value, "min": self.min, "max": self.max}
        groups = param_groups(parameters, defaults, check_value_options)
        total_norm = pre_clip_norm(
            all_named_params(groups), self.nonfinite, process_group=self.process_group
        )
        clipped = false_like(total_norm)
        for group in groups:
            bounds = value_range(group.options)
            grads = nonempty(local_tensors(group.grads()))
            if bounds is not None and grads:
                clipped = clipped | _outside(grads, *bounds).to(clipped.device)
                clamp_grads_(grads, *bounds, foreach=None, one_pass=True)
        # Sharded gradients: a shard that clipped makes the step clipped on every rank.
        clipped = any_on_any_rank(clipped, all_grads(groups), self.process_group)
        skipped = zero_if_skipped_(all_grads(groups), self.nonfinite, total_norm)
        return ClipStats(total_norm, self._threshold(total_norm), clipped, skipped)

    def _threshold(self, total_norm: Tensor) -> Tensor:
        bounds = value_range({"clip_value": self.clip_value, "min": self.min, "max": self.max})
        assert bounds is not None, "__init__ refuses a ValueClip without a range"
        low, high = bounds
        return limit_tensor(max(abs(low), abs(high)), total_norm.device)

    def hyperparameters(self) -> dict[str, Any]:
        if self.clip_value is not None:
            return {"clip_value": self.clip_value, "nonfinite": self.nonfinite}
        return {"min": self.min, "max": self.max, "nonfinite": self.nonfinite}


def _outside(grads: list[Tensor], low: float, high: float) -> Tensor:
    """Bool tensor: some element of some gradient lies outside ``[low, high]``."""
    extremes = [torch.aminmax(g) for g in grads]
    device = grads[0].device
    smallest = torch.stack([e.min.to(device=device, dtype=torch.float64) for e in extremes])
    largest = torch.stack([e.max.to(device=device, dtype=torch.float64) for e in extremes])
    return (smallest < low).any() | (largest > high).any()
