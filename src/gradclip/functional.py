"""Torch-exact gradient clipping: global norm, value, per-tensor norm.

Drop-in replacements for ``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``,
``get_total_norm`` and ``clip_grads_with_norm_``: same signatures, same return values, and the
same kernels in the same order, so results are bit-identical to the installed torch. On top:

- ``parameters`` may also be ``model.named_parameters()``, so errors name the parameter;
- a keyword-only ``nonfinite=`` policy (see :mod:`gradclip.nonfinite`);
- zero-element gradients are ignored where torch itself fails on them (the ``inf`` norm, the
  foreach value clip), and the answer is torch's answer on the remaining gradients.

No host synchronisation on the clip path: the clip coefficient is always multiplied in (no
``if coef < 1``), thresholds may be tensors, and nothing calls ``.item()``. CUDA graphs and
asynchronous execution keep working. The ``error`` policies (``error_if_nonfinite=True``,
``nonfinite="error"``) are the exception: raising is a host decision.

References:
    Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
    networks" (clipping by global norm).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils._foreach_utils import (
    _device_has_foreach_support,
    _group_tensors_by_device_and_dtype,
    _has_foreach_support,
)

from gradclip.distributed import (
    distributed_per_tensor_norms,
    distributed_total_norm,
    local_tensors,
    needs_reduction,
)
from gradclip.flat import (
    covering_buffers,
    grad_buffers,
    norm_operands,
    reiterable,
    whole_flat_buffers,
)
from gradclip.nonfinite import check_policy, is_nonfinite, raise_if_nonfinite, zero_grads_if_
from gradclip.parameters import (
    ParamsLike,
    check_norm_type,
    check_positive_number,
    named_grads,
    named_tensors,
)

# torch adds this to the norm before dividing; matched for bit-identical coefficients.
CLIP_EPS = 1e-6

_F = TypeVar("_F", bound=Callable)


def _no_grad(func: _F) -> _F:
    """Run ``func`` under ``torch.no_grad()``: clipping is never part of the graph."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def group_by_device_and_dtype(
    tensors: Sequence[Tensor],
) -> list[tuple[torch.device, list[Tensor], list[int]]]:
    """Tensors grouped by (device, dtype) in torch's order, with their input positions."""
    if not tensors:  # torch's grouping kernel rejects an empty list
        return []
    grouped = _group_tensors_by_device_and_dtype([list(tensors)], with_indices=True)
    return [(device, group, indices) for (device, _), ([group], indices) in grouped.items()]


def use_foreach(tensors: Sequence[Tensor], device: torch.device, foreach: bool | None) -> bool:
    """torch's rule: ``None`` picks foreach where supported; ``True`` insists or raises."""
    if foreach is None:
        return _has_foreach_support(list(tensors), device)
    if foreach and not _device_has_foreach_support(device):
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return bool(foreach)


def _group_norms(
    group: Sequence[Tensor], norm_type: float, device: torch.device, foreach: bool | None
) -> list[Tensor]:
    if math.isinf(norm_type) and any(t.numel() == 0 for t in group):
        # torch cannot take the inf norm of an empty tensor; it contributes 0 to the max.
        nonempty = [t for t in group if t.numel() > 0]
        norms = iter(_group_norms(nonempty, norm_type, device, foreach) if nonempty else [])
        return [next(norms) if t.numel() > 0 else t.new_zeros(()) for t in group]
    if use_foreach(group, device, foreach):
        return list(torch._foreach_norm(group, norm_type))
    return [torch.linalg.vector_norm(t, norm_type) for t in group]


def per_tensor_norms(tensors: Sequence[Tensor], norm_type: float, foreach: bool | None) -> list[Tensor]:
    """The p-norm of each tensor, in torch's (device, dtype) group order, foreach where possible."""
    norms: list[Tensor] = []
    for device, group, _ in group_by_device_and_dtype(tensors):
        norms.extend(_group_norms(group, norm_type, device, foreach))
    return norms


@_no_grad
def get_total_norm(
    tensors: ParamsLike,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    process_group: Any = None,
) -> Tensor:
    """Norm of all ``tensors`` viewed as one vector: ``||(||t_1||_p, ..., ||t_n||_p)||_p``.

    Same as ``torch.nn.utils.get_total_norm``: an empty input gives ``tensor(0.)``; the norm
    lives on the first tensor's device; ``norm_type`` is any p > 0 or ``inf``/``"inf"``.
    DTensors (FSDP2) and ``process_group=`` (tensors are this rank's shards) give the global
    norm as an ordinary tensor, equal on every rank (see :mod:`gradclip.distributed`).
    """
    p = check_norm_type(norm_type)
    # Flat gradient buffers (gradclip.flat) stand for the views they hold: O(1) kernels.
    all_tensors = norm_operands(tensors) or [t for _, t in named_tensors(tensors, "tensors")]
    if not all_tensors:
        return torch.tensor(0.0)
    if needs_reduction(all_tensors, process_group):
        total_norm = distributed_total_norm(all_tensors, p, foreach, process_group)
    else:
        first_device = all_tensors[0].device
        norms = per_tensor_norms(all_tensors, p, foreach)
        total_norm = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), p)
    if error_if_nonfinite and torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite "
            "norm anyway, set `error_if_nonfinite=False`"
        )
    return total_norm


def clip_coefficient(max_norm: float | Tensor, total_norm: Tensor) -> Tensor:
    """``min(max_norm / (total_norm + 1e-6), 1)``, as a tensor on ``total_norm``'s device.

    Written as ``reciprocal(total_norm + 1e-6) * max_norm``: that is how torch evaluates
    ``float / tensor``, so the bits match torch for a float ``max_norm`` and stay the same
    when ``max_norm`` is a tensor (an adaptive threshold).
    """
    return torch.clamp(torch.reciprocal(total_norm + CLIP_EPS) * max_norm, max=1.0)


def scale_grads_(grads: Sequence[Tensor], coefficient: Tensor, foreach: bool | None) -> None:
    """Multiply every gradient in place by a 0-dim ``coefficient`` (no host sync)."""
    for device, group, _ in group_by_device_and_dtype(covering_buffers(grads) or grads):
        coefficient_on_device = coefficient.to(device)
        if use_foreach(group, device, foreach):
            torch._foreach_mul_(group, coefficient_on_device)
        else:
            for grad in group:
                grad.mul_(coefficient_on_device)


def _check_max_norm(max_norm: float | Tensor) -> float | Tensor:
    # A tensor threshold (an adaptive strategy's) is used as is: checking it would sync.
    if isinstance(max_norm, Tensor):
        return max_norm
    return check_positive_number(max_norm, "max_norm")


@_no_grad
def clip_grads_with_norm_(
    parameters: ParamsLike,
    max_norm: float | Tensor,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    """Scale gradients by ``min(max_norm / (total_norm + 1e-6), 1)`` given a precomputed norm.

    Same as ``torch.nn.utils.clip_grads_with_norm_``; ``max_norm`` may also be a tensor.
    """
    max_norm = _check_max_norm(max_norm)
    parameters = reiterable(parameters)
    grads = local_tensors(grad_buffers(parameters) or [g for _, g in named_grads(parameters)])
    if not grads:
        return
    if not isinstance(total_norm, Tensor):
        total_norm = torch.tensor(float(total_norm))
    if needs_reduction([total_norm], None):  # torch's own DTensor norm, Partial placement
        total_norm = total_norm.full_tensor()
    scale_grads_(grads, clip_coefficient(max_norm, total_norm), foreach)


@_no_grad
def clip_grad_norm_(
    parameters: ParamsLike,
    max_norm: float | Tensor,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    nonfinite: str | None = None,
    process_group: Any = None,
) -> Tensor:
    """Clip the global gradient norm in place; return the total norm *before* clipping.

    ``g <- g * min(max_norm / (||g||_p + 1e-6), 1)`` for every gradient, where ``||g||_p`` is
    the norm of all gradients viewed as one vector. Bit-identical to
    ``torch.nn.utils.clip_grad_norm_``; ``nonfinite`` chooses what a NaN/Inf norm does
    (``"propagate"``/``None``, ``"skip"``, ``"error"``: see :mod:`gradclip.nonfinite`).

    References:
        Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
        networks".
    """
    policy = check_policy(nonfinite)
    max_norm = _check_max_norm(max_norm)
    parameters = reiterable(parameters)
    # Flat gradient buffers (gradclip.flat) stand for their views; "error" names a view.
    buffers = grad_buffers(parameters) if policy != "error" else None
    named = named_grads(parameters) if buffers is None else []
    grads = buffers or [g for _, g in named]
    total_norm = get_total_norm(
        grads, norm_type, error_if_nonfinite, foreach, process_group=process_group
    )
    if not grads:
        return total_norm
    grads = local_tensors(grads)
    if policy == "error":
        raise_if_nonfinite(named, total_norm)
    scale_grads_(grads, clip_coefficient(max_norm, total_norm), foreach)
    if policy == "skip":
        zero_grads_if_(grads, is_nonfinite(total_norm))
    return total_norm


@_no_grad
def clip_grad_norm_per_tensor_(
    parameters: ParamsLike,
    max_norm: float | Tensor,
    norm_type: float | str = 2.0,
    foreach: bool | None = None,
    *,
    nonfinite: str | None = None,
    process_group: Any = None,
) -> Tensor:
    """Clip each gradient to ``max_norm`` by its own norm; return the per-tensor norms before.

    ``g_i <- g_i * min(max_norm / (||g_i||_p + 1e-6), 1)``, the rule of
    ``torch.nn.utils.clip_grad_norm_`` applied to each tensor alone (what AutoClip's
    per-parameter mode does). Returns a 1-D tensor, one norm per gradient in order, on the
    first gradient's device. Under ``nonfinite="skip"`` one non-finite norm zeroes every
    gradient, as the whole step is to be skipped.
    """
    policy = check_policy(nonfinite)
    max_norm = _check_max_norm(max_norm)
    p = check_norm_type(norm_type)
    named = named_grads(parameters)
    grads = [g for _, g in named]
    if not grads:
        return torch.zeros(0)
    if needs_reduction(grads, process_group):
        norms = distributed_per_tensor_norms(grads, p, foreach, process_group)
    else:
        norms = per_tensor_norms_in_order(grads, p, foreach)
    grads = local_tensors(grads)
    result = torch.stack([n.to(grads[0].device) for n in norms])
    if policy == "error":
        raise_if_nonfinite(named, result.sum())
    coefficients = clip_coefficient(max_norm, result).unbind()
    for device, group, indices in group_by_device_and_dtype(grads):
        group_coefficients = [coefficients[i].to(device) for i in indices]
        if use_foreach(group, device, foreach):
            torch._foreach_mul_(group, group_coefficients)
        else:
            for grad, coefficient in zip(group, group_coefficients, strict=True):
                grad.mul_(coefficient)
    if policy == "skip":
        zero_grads_if_(grads, is_nonfinite(result).any())
    return result


def per_tensor_norms_in_order(tensors: Sequence[Tensor], norm_type: float, foreach: bool | None) -> list[Tensor]:
    """The p-norm of each tensor in input order (``per_tensor_norms`` gives torch's group order)."""
    norms: list[Tensor] = list(tensors)
    for device, group, indices in group_by_device_and_dtype(tensors):
        for index, norm in zip(indices, _group_norms(group, norm_type, device, foreach), strict=True):
            norms[index] = norm
    return norms


@_no_grad
def clip_grad_value_(
    parameters: ParamsLike,
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place.

    Same as ``torch.nn.utils.clip_grad_value_`` (returns ``None``). Zero-element gradients,
    on which torch's foreach path fails, are skipped: there is nothing in them to clip.
    """
    clip_value = check_positive_number(clip_value, "clip_value", allow_zero=True)
    parameters = reiterable(parameters)
    grads = grad_buffers(parameters) or [g for _, g in named_grads(parameters)]
    grads = [g for g in local_tensors(grads) if g.numel() > 0]
    clamp_grads_(grads, -clip_value, clip_value, foreach)


def clamp_grads_(
    grads: Sequence[Tensor], low: float | Tensor, high: float | Tensor, foreach: bool | None
) -> None:
    """Clamp every gradient element into ``[low, high]`` in place (torch's kernel order)."""
    buffers = whole_flat_buffers(grads)
    if buffers is not None:  # gradclip.flat: one pass per buffer, same numbers as min then max
        for buffer in buffers:
            buffer.clamp_(min=low, max=high)
        return
    for device, group, _ in group_by_device_and_dtype(grads):
        if use_foreach(group, device, foreach):
            torch._foreach_clamp_min_(group, low)
            torch._foreach_clamp_max_(group, high)
        else:
            for grad in group:
                grad.clamp_(min=low, max=high)
