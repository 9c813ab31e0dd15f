"""Non-finite gradient policies shared by every norm-based op.

A policy is chosen by the user with ``nonfinite=``:

- ``"propagate"`` (or ``None``, the default): torch's behaviour; a NaN/Inf total norm scales
  every gradient by NaN, and ``optimizer.step()`` would write NaN into the weights.
- ``"skip"``: when the total norm is not finite, every gradient is zeroed (without a host
  sync) and the non-finite total norm is returned, so the caller, or a strategy's
  ``ClipStats.skipped``, can skip ``optimizer.step()``.
- ``"error"``: raise a ``NonFiniteGradientError`` (a ``RuntimeError``) naming the first
  parameter whose gradient holds NaN/Inf. Deciding to raise needs the host to read the norm:
  this policy synchronises once per call, the others never do.

Whoever steps the optimizer after a clip asks the clipper's ``must_skip(stats)`` (one host
read, only for a clipper that may skip: under ``"skip"``, or a skipping strategy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradclip.distributed import local_tensors
from gradclip.parameters import NamedTensor

POLICIES = ("error", "skip", "propagate")


class NonFiniteGradientError(RuntimeError):
    """A gradient (or its norm) is NaN or Inf under the ``"error"`` policy."""


def check_policy(nonfinite: str | None) -> str:
    """The policy's name: one of ``POLICIES``; ``None`` means ``"propagate"``.

    Args:
        nonfinite: what the user passed as ``nonfinite=``.

    Returns:
        ``"error"``, ``"skip"`` or ``"propagate"``.

    Raises:
        ValueError: any other value.
    """
    if nonfinite is None:
        return "propagate"
    if nonfinite not in POLICIES:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, POLICIES))} or None, got {nonfinite!r}"
        )
    return nonfinite


def is_nonfinite(total_norm: Tensor) -> Tensor:
    """Bool tensor: the norm is NaN or +-Inf (stays on the device).

    Args:
        total_norm: a norm (any shape).

    Returns:
        ``~isfinite(total_norm)``.
    """
    return ~torch.isfinite(total_norm)


def zero_grads_if_(grads: Sequence[Tensor], condition: Tensor) -> None:
    """Zero every gradient in place where the 0-dim bool ``condition`` holds, without a sync.

    Args:
        grads: local gradients.
        condition: a 0-dim bool tensor on any device.
    """
    for grad in grads:
        grad.masked_fill_(condition.to(grad.device), 0.0)


def raise_if_nonfinite(named_grads: Sequence[NamedTensor], total_norm: Tensor) -> None:
    """Raise naming the first parameter whose gradient is not finite, if the norm is not.

    Synchronises with the host once: the decision to raise is a Python ``if``.

    Args:
        named_grads: the ``(name, grad)`` pairs the norm was taken over.
        total_norm: their total norm.

    Raises:
        NonFiniteGradientError: ``total_norm`` is NaN or Inf.
    """
    if bool(torch.isfinite(total_norm)):
        return
    for name, grad in named_grads:
        bad = ~torch.isfinite(grad)
        if bool(bad.any()):
            kinds = []
            if bool(torch.isnan(grad).any()):
                kinds.append("NaN")
            if bool(torch.isinf(grad).any()):
                kinds.append("Inf")
            raise NonFiniteGradientError(
                f"non-finite gradient: the gradient of '{name}' holds {' and '.join(kinds)} "
                f"({int(bad.sum())} of {grad.numel()} elements); the total norm is "
                f"{float(total_norm)}. Look at the layer that produced it (a log/sqrt/division "
                "of zero, an overflowing fp16 activation), or pass nonfinite='skip' to skip "
                "such steps."
            )
    raise NonFiniteGradientError(
        f"non-finite gradient norm: the total norm is {float(total_norm)} although every "
        "gradient is finite, so the norm itself overflowed in its dtype; compute it in a wider "
        "dtype (float32) or pass nonfinite='skip' to skip such steps."
    )


def false_like(total_norm: Tensor) -> Tensor:
    """A 0-dim ``False`` on ``total_norm``'s device (nothing clipped, nothing skipped)."""
    return torch.zeros((), dtype=torch.bool, device=total_norm.device)


def skipped_flag(policy: str, total_norm: Tensor) -> Tensor:
    """``ClipStats.skipped``: the norm is non-finite under the ``"skip"`` policy (no sync).

    Args:
        policy: a checked policy (``check_policy``).
        total_norm: the norm before clipping.

    Returns:
        A 0-dim bool tensor on ``total_norm``'s device.
    """
    if policy == "skip":
        return is_nonfinite(total_norm)
    return false_like(total_norm)


def zero_if_skipped_(grads: Sequence[Tensor], policy: str, total_norm: Tensor) -> Tensor:
    """Apply the ``"skip"`` policy: zero every gradient if the norm is non-finite (no sync).

    Args:
        grads: the gradients (sharded ones are zeroed on their local shard).
        policy: a checked policy (``check_policy``).
        total_norm: the norm before clipping.

    Returns:
        ``ClipStats.skipped``, as ``skipped_flag``.
    """
    skipped = skipped_flag(policy, total_norm)
    if policy == "skip":
        zero_grads_if_(local_tensors(grads), skipped)
    return skipped
