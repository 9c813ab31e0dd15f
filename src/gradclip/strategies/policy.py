"""The non-finite policy as the strategies apply it: raise, skip (zero and flag) or propagate."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradclip.distributed import local_tensors
from gradclip.functional import get_total_norm
from gradclip.nonfinite import is_nonfinite, raise_if_nonfinite, zero_grads_if_
from gradclip.parameters import NamedTensor


def skipped_flag(policy: str, total_norm: Tensor) -> Tensor:
    """``ClipStats.skipped``: the norm is non-finite under the ``"skip"`` policy (no sync)."""
    if policy == "skip":
        return is_nonfinite(total_norm)
    return false_like(total_norm)


def named_grads_of(named_params: list[NamedTensor]) -> list[NamedTensor]:
    """``(name, grad)`` for the parameters that have a gradient."""
    return [(name, p.grad) for name, p in named_params if p.grad is not None]


def pre_clip_norm(
    named_params: list[NamedTensor], policy: str, norm_type: float = 2.0, process_group: Any = None
) -> Tensor:
    """Global norm of the gradients before clipping; raises under ``"error"`` if non-finite.

    ``process_group``: the gradients are this rank's shards; the norm is reduced over it.
    """
    named = named_grads_of(named_params)
    total_norm = get_total_norm([g for _, g in named], norm_type, process_group=process_group)
    if policy == "error" and named:
        raise_if_nonfinite(named, total_norm)
    return total_norm


def zero_if_skipped_(grads: list[Tensor], policy: str, total_norm: Tensor) -> Tensor:
    """Apply the ``"skip"`` policy (zero every gradient if the norm is non-finite); the flag."""
    skipped = skipped_flag(policy, total_norm)
    if policy == "skip":
        zero_grads_if_(local_tensors(grads), skipped)
    return skipped


def false_like(total_norm: Tensor) -> Tensor:
    """A 0-dim ``False`` on ``total_norm``'s device."""
    return torch.zeros((), dtype=torch.bool, device=total_norm.device)
