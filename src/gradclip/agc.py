"""Adaptive gradient clipping (AGC): clip each unit's gradient relative to its weight norm.

For every unit ``i`` (an output row of a weight; a whole scalar/vector parameter):

    max_i = clipping * max(||W_i||, eps)
    G_i  <- G_i                                  if ||G_i|| <  max_i
    G_i  <- G_i * max_i / max(||G_i||, 1e-6)     otherwise

Semantics of ``optax.adaptive_grad_clip`` in torch's weight layout: torch stores weights as
``(out, in, ...)``, so a unit is a slice along dim 0 and its norm reduces every other dim
(optax reduces the input axes of its ``(..., in, out)`` layout, the same units). Parameters
whose squeezed shape has at most one dimension are one unit.

References:
    Brock, De, Smith & Simonyan, 2021, "High-Performance Large-Scale Image Recognition
    Without Normalization" (arXiv 2102.06171).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradclip.distributed import local_tensor, needs_reduction, sharded_unitwise_norm
from gradclip.functional import get_total_norm
from gradclip.nonfinite import check_policy, is_nonfinite, raise_if_nonfinite, zero_grads_if_
from gradclip.parameters import ParamsLike, check_positive_number, named_tensors

# optax's div_eps: keeps the division finite; "should be impossible to engage".
AGC_DIV_EPS = 1e-6


def unitwise_norm(x: Tensor) -> Tensor:
    """L2 norm of each unit of ``x``, shaped to broadcast against ``x``.

    Scalars and vectors (``x.squeeze().ndim <= 1``) are one unit; otherwise a unit is a slice
    along dim 0 (an output channel) and the norm reduces all other dims.

    Args:
        x: a weight or its gradient, in torch's ``(out, in, ...)`` layout.

    Returns:
        A 0-dim norm (one unit), or the ``(out, 1, ..., 1)`` norms of the rows.
    """
    if x.squeeze().ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def unitwise_norm_of(tensor: Tensor, process_group: Any = None) -> Tensor:
    """``unitwise_norm`` of a possibly sharded tensor (FSDP2 DTensor, or ``process_group``
    shards): reduced over the ranks where units are split (:mod:`gradclip.distributed`).

    Args:
        tensor: a weight or gradient, ordinary or a DTensor.
        process_group: the ranks holding the other dim-0 shards of an ordinary tensor.

    Returns:
        The unit norms, shaped to broadcast against this rank's local shard.
    """
    if needs_reduction([tensor], process_group):
        return sharded_unitwise_norm(tensor, process_group)
    return unitwise_norm(tensor)


def agc_coefficient(grad_norm: Tensor, param_norm: Tensor, clipping: float | Tensor, eps: float) -> Tensor:
    """Per-unit factor: 1 where ``||G|| < clipping * max(||W||, eps)``, else the scale-down.

    Args:
        grad_norm: the gradient's unit norms.
        param_norm: the weight's unit norms (same shape).
        clipping: the largest allowed ratio ``||G_i|| / max(||W_i||, eps)``.
        eps: the smallest weight norm a unit is measured against.

    Returns:
        ``clipping * max(||W||, eps) / max(||G||, 1e-6)`` where that is exceeded, else 1.
    """
    max_norm = clipping * torch.clamp(param_norm, min=eps)
    scale = max_norm / torch.clamp(grad_norm, min=AGC_DIV_EPS)
    return torch.where(grad_norm < max_norm, torch.ones_like(scale), scale)


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: ParamsLike,
    clipping: float | Tensor,
    eps: float = 1e-3,
    *,
    nonfinite: str | None = None,
    process_group: Any = None,
) -> Tensor:
    """AGC in place on every parameter's gradient; return the global L2 norm before clipping.

    ``clipping`` is the largest allowed ratio ``||G_i|| / max(||W_i||, eps)`` per unit
    (0.01 is the NFNet default for large batches). On one process the returned norm is
    computed from the unit norms already needed, so it costs no extra pass. Sharded
    parameters (FSDP2 DTensors, or ``process_group=`` for hand-made dim-0 shards) keep row
    units local and reduce whole-tensor units (see :mod:`gradclip.distributed`).

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs.
        clipping: the largest ratio of unit gradient norm to unit weight norm (> 0; a
            tensor is used as is).
        eps: the smallest weight norm a unit is measured against (>= 0).
        nonfinite: the non-finite policy (see :mod:`gradclip.nonfinite`).
        process_group: the ranks holding the other dim-0 shards, or ``None``.

    Returns:
        The 0-dim global L2 norm of the gradients before clipping.

    Raises:
        ValueError: a bad ``clipping``, ``eps`` or ``nonfinite``.
        RuntimeError: a non-finite gradient under ``nonfinite="error"``.

    References:
        Brock et al., 2021, "High-Performance Large-Scale Image Recognition Without
        Normalization".
    """
    policy = check_policy(nonfinite)
    if not isinstance(clipping, Tensor):
        clipping = check_positive_number(clipping, "clipping")
    eps = check_positive_number(eps, "eps", allow_zero=True)
    named = [(name, p) for name, p in named_tensors(parameters) if p.grad is not None]
    if not named:
        return torch.tensor(0.0)
    grads = [p.grad for _, p in named]
    grad_norms = [unitwise_norm_of(g, process_group) for g in grads]
    param_norms = [unitwise_norm_of(p, process_group) for _, p in named]
    if needs_reduction(grads, process_group):
        total_norm = get_total_norm(grads, process_group=process_group)
    else:
        device = grads[0].device
        total_norm = torch.stack([_squared_norm(n).to(device) for n in grad_norms]).sum().sqrt()
    named_grads = [(name, p.grad) for name, p in named]
    if policy == "error":
        raise_if_nonfinite(named_grads, total_norm)
    local_grads = [local_tensor(g) for g in grads]
    for grad, grad_norm, param_norm in zip(local_grads, grad_norms, param_norms, strict=True):
        grad.mul_(agc_coefficient(grad_norm, param_norm, clipping, eps))
    if policy == "skip":
        zero_grads_if_(local_grads, is_nonfinite(total_norm))
    return total_norm


def _squared_norm(unit_norms: Tensor) -> Tensor:
    # The squared unit norms add up to the squared norm of the whole gradient.
    wide = torch.promote_types(unit_norms.dtype, torch.float32)
    return unit_norms.to(wide).square().sum()
