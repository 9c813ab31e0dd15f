"""Non-finite gradient policies shared by every norm-based op.

A policy is chosen by the user with ``nonfinite=``:

- ``"propagate"`` (or ``None``, the default): torch's behaviour; a NaN/Inf total norm scales
  every gradient by NaN, and ``optimizer.step()`` would write NaN into the weights.
- ``"skip"``: when the total norm is not finite, every gradient is zeroed (without a host
  sync) and the non-finite total norm is returned, so the caller, or a strategy's
  ``ClipStats.skipped``, can skip ``optimizer.step()``.
- ``"error"``: raise a ``RuntimeError`` naming the first parameter whose gradient holds
  NaN/Inf. Deciding to raise needs the host to read the norm: this policy synchronises once
  per call, the others never do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradclip.parameters import NamedTensor

POLICIES = ("error", "skip", "propagate")


def check_policy(nonfinite: str | None) -> str:
    """Return the policy name; ``None`` means ``"propagate"``; anything else is a ``ValueError``."""
    if nonfinite is None:
        return "propagate"
    if nonfinite not in POLICIES:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, POLICIES))} or None, got {nonfinite!r}"
        )
    return nonfinite


def is_nonfinite(total_norm: Tensor) -> Tensor:
    """Bool tensor: the norm is NaN or +-Inf (stays on the device)."""
    return ~torch.isfinite(total_norm)


def zero_grads_if_(grads: Sequence[Tensor], condition: Tensor) -> None:
    """Zero every gradient in place where the 0-dim bool ``condition`` holds, without a sync."""
    for grad in grads:
        grad.masked_fill_(condition.to(grad.device), 0.0)


def raise_if_nonfinite(named_grads: Sequence[NamedTensor], total_norm: Tensor) -> None:
    """Raise a ``RuntimeError`` naming the first parameter whose gradient is not finite.

    Synchronises with the host once: the decision to raise is a Python ``if``.
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
            raise RuntimeError(
                f"non-finite gradient: the gradient of '{name}' holds {' and '.join(kinds)} "
                f"({int(bad.sum())} of {grad.numel()} elements); the total norm is "
                f"{float(total_norm)}. Look at the layer that produced it (a log/sqrt/division "
                "of zero, an overflowing fp16 activation), or pass nonfinite='skip' to skip "
                "such steps."
            )
    raise RuntimeError(
        f"non-finite gradient norm: the total norm is {float(total_norm)} although every "
        "gradient is finite, so the norm itself overflowed in its dtype; compute it in a wider "
        "dtype (float32) or pass nonfinite='skip' to skip such steps."
    )
