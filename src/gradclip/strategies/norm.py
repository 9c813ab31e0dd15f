"""Clipping by the global gradient norm (``NormClip``) and no clipping at all (``NoClip``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import clip_coefficient
from gradclip.functional import clip_grad_norm_, pre_clip_norm
from gradclip.nonfinite import check_policy, false_like, skipped_flag, zero_if_skipped_
from gradclip.parameters import (
    NamedTensor,
    ParamsLike,
    check_norm_type,
    check_threshold,
)
from gradclip.strategies.base import Clipper, ClipStats, limit_tensor
from gradclip.strategies.groups import ParamGroup, all_grads, all_named_params, param_groups

# (max_norm, norm_type) of a parameter group: groups that share it are clipped together
PartitionKey = tuple[float | None, float]


class NoClip(Clipper):
    """Leave gradients unchanged; report their global L2 norm (and apply the non-finite policy).

    The baseline every comparison needs, and a monitor when only the norm is wanted.

    Args:
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm;
            ``None``: this process's gradients (and DTensor meshes) only.

    Raises:
        ValueError: an unknown ``nonfinite``.
    """

    kind = "none"

    def __init__(self, *, nonfinite: str | None = None, process_group: Any = None) -> None:
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        groups = param_groups(parameters, {})
        total_norm = pre_clip_norm(
            all_named_params(groups), self.nonfinite, process_group=self.process_group
        )
        skipped = zero_if_skipped_(all_grads(groups), self.nonfinite, total_norm)
        return ClipStats(total_norm, None, false_like(total_norm), skipped)

    def hyperparameters(self) -> dict[str, Any]:
        return {"nonfinite": self.nonfinite}


def check_norm_options(max_norm: float | None, norm_type: float | str) -> dict[str, Any]:
    """Validated ``NormClip`` options; ``max_norm=None`` (groups only) leaves a group unclipped."""
    if max_norm is not None:
        max_norm = check_threshold(max_norm, "max_norm")
    p = check_norm_type(norm_type)
    if math.isnan(p):  # torch would return a NaN norm: no step would ever be clipped
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}")
    return {"max_norm": max_norm, "norm_type": p}


class NormClip(Clipper):
    """Clip the global gradient norm to ``max_norm``: ``g <- g * min(max_norm / (||g||_p + 1e-6), 1)``.

    The classic fix for exploding gradients in recurrent networks; torch-exact (it is
    ``gradclip.clip_grad_norm_``). ``ClipStats.threshold`` is ``max_norm``.

    With parameter groups, groups that share ``(max_norm, norm_type)`` are clipped together by
    their joint norm (so ``optimizer.param_groups`` without overrides is one global clip);
    a group with ``max_norm=None`` is left unclipped. ``total_norm`` is then the norm of all
    gradients with the default ``norm_type``, and ``threshold`` the default ``max_norm``.

    Args:
        max_norm: the largest global norm let through (a positive finite number).
        norm_type: the p of the p-norm (``2.0``, ``inf``, or any value torch accepts).
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: ``max_norm`` not a positive finite number, or a ``norm_type`` or
            ``nonfinite`` torch or gradclip does not accept.

    References:
        Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
        networks".
    """

    kind = "norm"

    def __init__(
        self,
        max_norm: float,
        norm_type: float | str = 2.0,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        if max_norm is None:
            raise ValueError("max_norm must be a positive finite number, got None")
        options = check_norm_options(max_norm, norm_type)
        self.max_norm: float = options["max_norm"]
        self.norm_type: float = options["norm_type"]
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        defaults = {"max_norm": self.max_norm, "norm_type": self.norm_type}
        groups = param_groups(parameters, defaults, check_norm_options)
        partitions = _partition(groups)
        if list(partitions) == [(self.max_norm, self.norm_type)]:
            named = partitions[(self.max_norm, self.norm_type)]
            total_norm = clip_grad_norm_(
                named, self.max_norm, self.norm_type, nonfinite=self.nonfinite,
                process_group=self.process_group,
            )
            clipped = clip_coefficient(self.max_norm, total_norm) < 1
            skipped = skipped_flag(self.nonfinite, total_norm)
        else:
            total_norm, clipped, skipped = self._clip_partitions_(groups, partitions)
        return ClipStats(total_norm, limit_tensor(self.max_norm, total_norm.device), clipped, skipped)

    def _clip_partitions_(
        self, groups: list[ParamGroup], partitions: dict[PartitionKey, list[NamedTensor]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        total_norm = pre_clip_norm(
            all_named_params(groups), self.nonfinite, self.norm_type, self.process_group
        )
        clipped = false_like(total_norm)
        for (max_norm, norm_type), named in partitions.items():
            if max_norm is not None:
                norm = clip_grad_norm_(named, max_norm, norm_type, process_group=self.process_group)
                clipped = clipped | (clip_coefficient(max_norm, norm) < 1).to(clipped.device)
        skipped = zero_if_skipped_(all_grads(groups), self.nonfinite, total_norm)
        return total_norm, clipped, skipped

    def hyperparameters(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "norm_type": self.norm_type, "nonfinite": self.nonfinite}


def _partition(groups: list[ParamGroup]) -> dict[PartitionKey, list[NamedTensor]]:
    partitions: dict[PartitionKey, list[NamedTensor]] = {}
    for group in groups:
        key = (group.options["max_norm"], group.options["norm_type"])
        partitions.setdefault(key, []).extend(group.named_params)
    return partitions

