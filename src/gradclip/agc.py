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

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import has_foreach_support, per_tensor_norms
from gradclip.distributed import local_tensor, needs_reduction, sharded_unitwise_norms
from gradclip.functional import get_total_norm
from gradclip.nonfinite import check_policy, is_nonfinite, raise_if_nonfinite, zero_grads_if_
from gradclip.parameters import NamedTensor, ParamsLike, check_positive_number, named_tensors

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

    Raises:
        TypeError: ``x`` is not a tensor (a list, say: pass ``torch.tensor(x)``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    norms: Tensor = (
        torch.linalg.vector_norm(x) if x.squeeze().ndim <= 1
        else torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)
    )
    return norms


def unitwise_norm_of(tensor: Tensor, process_group: Any = None) -> Tensor:
    """``unitwise_norm`` of a possibly sharded tensor (FSDP2 DTensor, or ``process_group``
    shards): reduced over the ranks where units are split (``gradclip.distributed``).

    Args:
        tensor: a weight or gradient, ordinary or a DTensor.
        process_group: the ranks holding the other dim-0 shards of an ordinary tensor.

    Returns:
        The unit norms, shaped to broadcast against this rank's local shard.
    """
    return unit_norms_of([tensor], process_group)[0]


def unit_norms_of(tensors: Sequence[Tensor], process_group: Any = None) -> list[Tensor]:
    """``unitwise_norm`` of each tensor; sharded ones reduced with one all-reduce per group of
    ranks for all of them (never one per tensor).

    Args:
        tensors: weights and gradients, ordinary or DTensors.
        process_group: the ranks holding the other dim-0 shards of the ordinary tensors.

    Returns:
        For each tensor, its unit norms shaped to broadcast against its local shard.
    """
    if needs_reduction(tensors, process_group):
        return sharded_unitwise_norms(tensors, process_group)
    return local_unit_norms(tensors)


def local_unit_norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``unitwise_norm`` of each ordinary tensor, the one-unit tensors in one foreach call.

    Whole-tensor units (biases, scalars) of one (device, dtype) take one ``_foreach_norm``
    (the per-tensor norm kernel where foreach is not supported); row units one reduction
    over all but dim 0 per tensor.

    Args:
        tensors: ordinary weights and gradients.

    Returns:
        For each tensor, in order, what ``unitwise_norm`` gives.
    """
    whole = [i for i, t in enumerate(tensors) if t.squeeze().ndim <= 1]
    whole_norms = dict(zip(whole, per_tensor_norms([tensors[i] for i in whole], 2.0, None,
                                                   input_order=True), strict=True))
    return [whole_norms[i] if i in whole_norms else unitwise_norm(tensor)
            for i, tensor in enumerate(tensors)]


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
    units local and reduce whole-tensor units (see ``gradclip.distributed``).

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs.
        clipping: the largest ratio of unit gradient norm to unit weight norm (> 0; a
            tensor is used as is).
        eps: the smallest weight norm a unit is measured against (>= 0).
        nonfinite: the non-finite policy (see ``gradclip.nonfinite``).
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
    named = named_tensors(parameters)
    return clip_units_with_norm_(named, clipping, eps, policy, process_group)[0]


def clip_units_with_norm_(
    named_params: Sequence[NamedTensor], clipping: float | Tensor, eps: float, policy: str,
    process_group: Any = None,
) -> tuple[Tensor, Tensor]:
    """AGC with the non-finite policy, the total norm taken from the unit norms (checked options).

    Args:
        named_params: ``(name, parameter)`` pairs; parameters without a gradient are skipped.
        clipping: the largest ratio of unit gradient norm to unit weight norm.
        eps: the smallest weight norm a unit is measured against.
        policy: a checked non-finite policy.
        process_group: the ranks holding the other dim-0 shards, or ``None``.

    Returns:
        ``(total_norm, clipped)``: the 0-dim global L2 norm before clipping, and whether some
        unit of this rank's pieces was scaled (0-dim bool).

    Raises:
        RuntimeError: a non-finite gradient under ``"error"``.
    """
    named = [(name, p) for name, p in named_params if p.grad is not None]
    if not named:  # a rank with nothing to clip still joins the others' norm
        total_norm = get_total_norm([], process_group=process_group)
        return total_norm, torch.zeros((), dtype=torch.bool, device=total_norm.device)
    grads = [p.grad for _, p in named if p.grad is not None]
    norms = unit_norms_of(grads + [p for _, p in named], process_group)
    grad_norms, param_norms = norms[: len(grads)], norms[len(grads) :]
    if needs_reduction(grads, process_group):
        total_norm = get_total_norm(grads, process_group=process_group)
    else:  # the squared unit norms add up to the squared norm: no extra pass
        device = grads[0].device
        total_norm = torch.stack([_squared_norm(n).to(device) for n in grad_norms]).sum().sqrt()
    if policy == "error":
        raise_if_nonfinite([(name, p.grad) for name, p in named if p.grad is not None], total_norm)
    local_grads = [local_tensor(g) for g in grads]
    clipped = scale_units_(local_grads, zip(grad_norms, param_norms, strict=True), clipping, eps)
    if policy == "skip":
        zero_grads_if_(local_grads, is_nonfinite(total_norm))
    return total_norm, clipped


def clip_units_(
    named_params: Sequence[NamedTensor], clipping: float | Tensor, eps: float,
    process_group: Any = None,
) -> Tensor:
    """AGC on the gradients of ``named_params`` (no total norm, no policy): the strategy's step.

    Args:
        named_params: ``(name, parameter)`` pairs; parameters without a gradient are skipped.
        clipping: the largest ratio of unit gradient norm to unit weight norm.
        eps: the smallest weight norm a unit is measured against.
        process_group: the ranks holding the other dim-0 shards of ordinary tensors.

    Returns:
        0-dim bool, on the first gradient's device: some unit of this rank's pieces was scaled.
    """
    params = [p for _, p in named_params if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    if needs_reduction(grads, process_group):
        # Every unit norm first: one all-reduce per group of ranks for all of them.
        norms = sharded_unitwise_norms(grads + params, process_group)
        pairs: Iterable[tuple[Tensor, Tensor]] = zip(norms[: len(grads)], norms[len(grads) :], strict=True)
    else:  # every unit norm first (one foreach call for the whole-tensor units), then scale
        norms = local_unit_norms(grads + params)
        pairs = zip(norms[: len(grads)], norms[len(grads) :], strict=True)
    return scale_units_([local_tensor(g) for g in grads], pairs, clipping, eps)


def scale_units_(
    grads: Sequence[Tensor], unit_norms: Iterable[tuple[Tensor, Tensor]],
    clipping: float | Tensor, eps: float,
) -> Tensor:
    """Multiply each local gradient by its AGC coefficient in place.

    The coefficients of all units of one (device, dtype) are computed at once, on the unit
    norms laid end to end (the same element-wise formula: the same bits as one tensor at a
    time), and applied by one foreach multiply per group: a fixed number of kernels, not a
    handful per parameter.

    Args:
        grads: the local gradients.
        unit_norms: for each, the ``(gradient, weight)`` unit norms, shaped to broadcast.
        clipping: the largest ratio of unit gradient norm to unit weight norm.
        eps: the smallest weight norm a unit is measured against.

    Returns:
        0-dim bool on the first gradient's device (CPU if none): some unit was scaled.
    """
    pairs = list(unit_norms)
    clipped = torch.zeros((), dtype=torch.bool, device=grads[0].device if grads else None)
    groups: dict[tuple[torch.device, torch.dtype, torch.dtype], list[int]] = {}
    for i, (grad_norm, param_norm) in enumerate(pairs):
        key = (grad_norm.device, grad_norm.dtype, param_norm.dtype)
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        grad_norms = torch.cat([pairs[i][0].reshape(-1) for i in indices])
        param_norms = torch.cat([pairs[i][1].reshape(-1) for i in indices])
        coefficients = agc_coefficient(grad_norms, param_norms, clipping, eps)
        sizes = [pairs[i][0].numel() for i in indices]
        factors = [
            c.view(pairs[i][0].shape)
            for i, c in zip(indices, coefficients.split(sizes), strict=True)
        ]
        group = [grads[i] for i in indices]
        if len({g.dtype for g in group}) == 1 and has_foreach_support(group, group[0].device):
            torch._foreach_mul_(group, factors)
        else:
            for grad, factor in zip(group, factors, strict=True):
                grad.mul_(factor)
        clipped = clipped | (coefficients < 1).any().to(clipped.device)
    return clipped


def _squared_norm(unit_norms: Tensor) -> Tensor:
    # The squared unit norms add up to the squared norm of the whole gradient.
    wide = torch.promote_types(unit_norms.dtype, torch.float32)
    return unit_norms.to(wide).square().sum()
