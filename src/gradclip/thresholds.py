"""Thresholds the caller hands to the norm ops: a checked float, or a tensor used on the device.

A float ``max_norm`` is checked on the host (positive and finite, else a ``ValueError``). A
tensor ``max_norm`` (an adaptive strategy's, or the user's) is never read on the host, so it
cannot be checked up front; instead each non-finite policy treats a bad one (NaN, +-Inf, zero
or negative) as it treats a non-finite gradient:

- ``"propagate"``: torch's behaviour, which multiplies by the coefficient whatever it is
  (NaN gradients for a NaN threshold, flipped signs for a negative one);
- ``"skip"``: the skip mask covers it, on the device: every gradient is zeroed and the step
  reported skipped;
- ``"error"``: a ``ValueError`` naming the threshold (a host read, as that policy always does).

A 1-element tensor of any shape (``torch.tensor([1.0])``) is accepted, as torch accepts it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradclip.parameters import check_positive_number


def check_max_norm(max_norm: float | Tensor, name: str = "max_norm") -> float | Tensor:
    """A float threshold checked, or a tensor threshold as a 0-dim view (no host read).

    Args:
        max_norm: the threshold given by the caller.
        name: the argument's name, for the error message.

    Returns:
        The float, or the tensor viewed as 0-dim.

    Raises:
        ValueError: a float that is not positive and finite, or a tensor that does not hold
            exactly one element.
        TypeError: neither a number nor a tensor.
    """
    if not isinstance(max_norm, Tensor):
        return check_positive_number(max_norm, name)
    if max_norm.numel() != 1:
        raise ValueError(
            f"{name} must be a number or a one-element tensor, got a tensor of shape "
            f"{tuple(max_norm.shape)}"
        )
    return max_norm.reshape(())


def bad_threshold(max_norm: float | Tensor) -> Tensor | None:
    """Bool tensor: a tensor threshold is NaN, infinite, zero or negative; ``None`` for a float.

    Args:
        max_norm: a threshold returned by ``check_max_norm``.

    Returns:
        ``~(isfinite(max_norm) & (max_norm > 0))`` on the threshold's device, or ``None``
        (a float was checked on the host already).
    """
    if not isinstance(max_norm, Tensor):
        return None
    return ~(torch.isfinite(max_norm) & (max_norm > 0))


def raise_if_bad_threshold(max_norm: float | Tensor, name: str = "max_norm") -> None:
    """The ``"error"`` policy for a tensor threshold: raise if it is not positive and finite.

    Synchronises with the host once (a tensor threshold only).

    Args:
        max_norm: a threshold returned by ``check_max_norm``.
        name: the argument's name, for the error message.

    Raises:
        ValueError: the tensor threshold is NaN, infinite, zero or negative.
    """
    bad = bad_threshold(max_norm)
    if bad is not None and bool(bad):
        raise ValueError(
            f"{name} must be a positive finite number, got {float(max_norm)} (a tensor); "
            "gradients left unchanged"
        )
