"""Torch-exact gradient clipping: global norm, value, per-tensor norm.

Drop-in replacements for ``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``,
``get_total_norm`` and ``clip_grads_with_norm_``: same signatures, same return values, and the
same kernels in the same order, so results are bit-identical to the installed torch. On top:

- ``parameters`` may also be ``model.named_parameters()``, so errors name the parameter;
- a keyword-only ``nonfinite=`` policy (see ``gradclip.nonfinite``);
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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import (
    clamp_,
    clip_coefficient,
    group_by_device_and_dtype,
    per_tensor_norms,
    scale_,
    scale_groups_,
    total_norm_of_groups,
)
from gradclip.distributed import (
    distributed_per_tensor_norms,
    distributed_total_norm,
    is_dtensor,
    local_tensor,
    local_tensors,
    needs_reduction,
)
from gradclip.flat import (
    covering_buffers,
    grad_buffers,
    is_flat,
    norm_operands,
    plain_or_flat_grads,
    reiterable,
    whole_flat_buffers,
)
from gradclip.nonfinite import check_policy, is_nonfinite, raise_if_nonfinite, zero_grads_if_
from gradclip.parameters import (
    NamedTensor,
    ParamsLike,
    check_norm_type,
    check_positive_number,
    named_grads,
    named_tensors,
    plain_tensors,
)
from gradclip.thresholds import bad_threshold, check_max_norm, raise_if_bad_threshold


@torch.no_grad()
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
    lives on the first tensor's device; ``norm_type`` is whatever torch accepts (any p,
    ``inf``/``"inf"``; 0 counts non-zeros, negative p as ``torch.linalg.vector_norm``).
    DTensors (FSDP2) and ``process_group=`` (tensors are this rank's shards) give the global
    norm as an ordinary tensor, equal on every rank (see ``gradclip.distributed``), for
    p > 0 and ``inf``.

    Args:
        tensors: tensors, one tensor, or ``(name, tensor)`` pairs.
        norm_type: p, any number, or ``inf`` / ``"inf"``.
        error_if_nonfinite: raise if the norm is NaN or Inf (a host sync).
        foreach: as in ``torch.nn.utils.get_total_norm``.
        process_group: the ranks holding the other shards of ``tensors``, or ``None``.

    Returns:
        The 0-dim total norm.

    Raises:
        RuntimeError: ``error_if_nonfinite`` and the norm is not finite.
        TypeError: ``norm_type`` is not a number (torch's ``float()`` fails too).
        ValueError: a ``norm_type`` string that is not a number, or p <= 0 (or NaN) on
            sharded tensors.
    """
    p = check_norm_type(norm_type)
    plain = plain_tensors(tensors)
    if plain is not None and (not plain or not is_flat(plain[0])):
        all_tensors = plain
    else:  # flat gradient buffers (gradclip.flat) stand for the views they hold: O(1) kernels
        plain = None
        all_tensors = norm_operands(tensors) or [t for _, t in named_tensors(tensors, "tensors")]
    if not all_tensors and process_group is None:
        return torch.tensor(0.0)
    total_norm = _total_norm(all_tensors, p, foreach, process_group, plain=plain is not None)
    if error_if_nonfinite:
        raise_if_nonfinite_total(total_norm, p)
    return total_norm


def raise_if_nonfinite_total(total_norm: Tensor, norm_type: float) -> None:
    """torch's ``error_if_nonfinite``: raise if the total norm is NaN or Inf (a host sync).

    Args:
        total_norm: the 0-dim total norm.
        norm_type: its p, for the message.

    Raises:
        RuntimeError: the norm is not finite (torch's message).
    """
    if torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )


def _total_norm(
    tensors: Sequence[Tensor], p: float, foreach: bool | None, process_group: Any, plain: bool
) -> Tensor:
    if needs_reduction([] if plain else tensors, process_group):  # a rank with none joins too
        check_shardable_norm_type(p)
        return distributed_total_norm(tensors, p, foreach, process_group)
    groups = group_by_device_and_dtype(tensors)
    return total_norm_of_groups(groups, p, foreach, tensors[0].device, plain=plain)


def check_shardable_norm_type(norm_type: float) -> None:
    """Sharded norms are reduced from p-th powers (or a max): p > 0 and ``inf`` only.

    Args:
        norm_type: p, as ``gradclip.parameters.check_norm_type`` returns it.

    Raises:
        ValueError: p <= 0, ``-inf`` or NaN, whose per-shard parts do not add up.
    """
    if not norm_type > 0:
        raise ValueError(
            f"norm_type must be a number p > 0 or inf on sharded gradients, got {norm_type!r} "
            "(0 and negative p are computed on unsharded tensors only)"
        )


def pre_clip_norm(
    named_params: Sequence[NamedTensor],
    policy: str,
    norm_type: float = 2.0,
    process_group: Any = None,
) -> Tensor:
    """Global norm of the gradients before clipping, with the ``"error"`` policy applied.

    Args:
        named_params: ``(name, parameter)`` pairs made by
            ``gradclip.parameters.named_tensors``; parameters without a gradient are
            ignored.
        policy: a checked non-finite policy (``gradclip.nonfinite.check_policy``).
        norm_type: p, any float (``torch.linalg.vector_norm``'s meaning).
        process_group: the gradients are this rank's shards; the norm is reduced over it.

    Returns:
        The 0-dim total norm.

    Raises:
        RuntimeError: under ``"error"``, naming the first parameter whose gradient is not
            finite.
    """
    named = named_grads(named_params, checked=True)
    total_norm = get_total_norm([g for _, g in named], norm_type, process_group=process_group)
    if policy == "error" and named:
        raise_if_nonfinite(named, total_norm)
    return total_norm


def scale_grads_(grads: Sequence[Tensor], coefficient: Tensor, foreach: bool | None) -> None:
    """Multiply every gradient in place by a 0-dim ``coefficient`` (no host sync).

    Args:
        grads: the gradients (local tensors); flat buffers they cover are scaled whole.
        coefficient: the factor, a 0-dim tensor on any device.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
    """
    scale_(covering_buffers(grads) or grads, coefficient, foreach)


def skip_nonfinite_(
    grads: Sequence[Tensor], norms: Tensor, max_norm: float | Tensor
) -> Tensor:
    """The ``"skip"`` policy of the norm ops: zero every gradient when a norm is non-finite
    or a tensor ``max_norm`` is bad (``gradclip.thresholds``), without a host sync.

    Args:
        grads: the local gradients.
        norms: the norm(s) before clipping (0-dim, or one per tensor).
        max_norm: the threshold, a checked float or a 0-dim tensor.

    Returns:
        ``norms``, NaN where a bad threshold made the step skip: a non-finite returned norm
        stays the one sign of a skipped step.
    """
    skip = is_nonfinite(norms).any()
    bad = bad_threshold(max_norm)
    if bad is not None:
        bad = bad.to(norms.device)
        skip = skip | bad
        norms = torch.where(bad, torch.full_like(norms, float("nan")), norms)
    zero_grads_if_(grads, skip)
    return norms


@torch.no_grad()
def clip_grads_with_norm_(
    parameters: ParamsLike,
    max_norm: float | Tensor,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    """Scale gradients by ``min(max_norm / (total_norm + 1e-6), 1)`` given a precomputed norm.

    Same as ``torch.nn.utils.clip_grads_with_norm_``; ``max_norm`` may also be a tensor.

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs.
        max_norm: the threshold, a positive float or a one-element tensor.
        total_norm: the norm to clip by (a float, a tensor, or torch's DTensor norm).
        foreach: as in ``torch.nn.utils.clip_grads_with_norm_``.

    Returns:
        ``None``; the gradients are scaled in place.

    Raises:
        ValueError: a float ``max_norm`` that is not positive and finite.

    References:
        ``torch.nn.utils.clip_grads_with_norm_`` (torch 2.6 and later).
    """
    max_norm = check_max_norm(max_norm)
    parameters = reiterable(parameters)
    plain, buffers = plain_or_flat_grads(parameters)
    grads = plain if plain is not None else local_tensors(
        buffers or grad_buffers(parameters) or [g for _, g in named_grads(parameters)]
    )
    if not grads:
        return
    if not isinstance(total_norm, Tensor):
        total_norm = torch.tensor(float(total_norm))
    if is_dtensor(total_norm):  # torch's own DTensor norm, Partial placement
        total_norm = total_norm.full_tensor()
    scale_grads_(grads, clip_coefficient(max_norm, total_norm), foreach)


@torch.no_grad()
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
    (``"propagate"``/``None``, ``"skip"``, ``"error"``: see ``gradclip.nonfinite``). A
    tensor ``max_norm`` is never read on the host: under ``"skip"`` a NaN, infinite or
    non-positive one zeroes every gradient and the returned norm is NaN (the sign of a
    skipped step); under ``"error"`` it raises; under ``"propagate"`` it is used as torch
    uses it (see ``gradclip.thresholds``).

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs (errors then
            name the parameter).
        max_norm: the threshold, a positive float or a one-element tensor.
        norm_type: p, any number, or ``inf`` / ``"inf"`` (torch's meaning).
        error_if_nonfinite: torch's flag: raise if the norm is not finite.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        nonfinite: the non-finite policy (see ``gradclip.nonfinite``).
        process_group: the ranks holding the other shards of the gradients, or ``None``.

    Returns:
        The 0-dim total norm before clipping.

    Raises:
        RuntimeError: a non-finite norm under ``error_if_nonfinite`` or ``nonfinite="error"``.
        ValueError: a bad ``max_norm``, ``norm_type`` or ``nonfinite``; a bad tensor
            ``max_norm`` under ``nonfinite="error"``.

    References:
        Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
        networks".
    """
    policy = check_policy(nonfinite)
    max_norm = check_max_norm(max_norm)
    parameters = reiterable(parameters)
    # A plain list of parameters: torch's work and no more ("error" needs names, a process
    # group the distributed path). Flat gradient buffers (gradclip.flat) stand for their
    # views; "error" names a view.
    plain, buffers = plain_or_flat_grads(parameters) if policy != "error" else (None, None)
    if plain is not None and process_group is None:
        p = check_norm_type(norm_type)
        return _clip_plain_grads_(plain, max_norm, p, error_if_nonfinite, foreach, policy)
    if buffers is None and plain is None and policy != "error":
        buffers = grad_buffers(parameters)
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
        raise_if_bad_threshold(max_norm)
    scale_grads_(grads, clip_coefficient(max_norm, total_norm), foreach)
    if policy == "skip":
        total_norm = skip_nonfinite_(grads, total_norm, max_norm)
    return total_norm


def _clip_plain_grads_(
    grads: list[Tensor],
    max_norm: float | Tensor,
    p: float,
    error_if_nonfinite: bool,
    foreach: bool | None,
    policy: str,
) -> Tensor:
    """``clip_grad_norm_`` on ordinary local gradients, grouped once for norm and scale.

    The kernels and their order are torch's (bit-identical results); the (device, dtype)
    groups and the foreach choice are made once, not once for the norm and again for the scale.
    """
    if not grads:
        return torch.tensor(0.0)
    groups = group_by_device_and_dtype(grads)
    total_norm = total_norm_of_groups(groups, p, foreach, grads[0].device, plain=True)
    if error_if_nonfinite:
        raise_if_nonfinite_total(total_norm, p)
    scale_groups_(groups, clip_coefficient(max_norm, total_norm), foreach, plain=True)
    if policy == "skip":
        total_norm = skip_nonfinite_(grads, total_norm, max_norm)
    return total_norm


def per_tensor_grad_norms(
    grads: Sequence[Tensor], norm_type: float, foreach: bool | None = None, process_group: Any = None
) -> Tensor:
    """The norm of each gradient as a whole (sharded ones reduced), in input order.

    Args:
        grads: the gradients (ordinary tensors or DTensors), at least one.
        norm_type: p, as ``gradclip.parameters.check_norm_type`` returns it.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        process_group: the ranks holding the other shards of the ordinary tensors, or ``None``.

    Returns:
        A 1-D tensor, one norm per gradient, on the first gradient's (local) device: the same
        on every rank.

    Raises:
        ValueError: p <= 0 on sharded gradients.
    """
    if needs_reduction(grads, process_group):
        check_shardable_norm_type(norm_type)
        norms = distributed_per_tensor_norms(grads, norm_type, foreach, process_group)
    else:
        norms = per_tensor_norms(grads, norm_type, foreach, input_order=True)
    device = local_tensor(grads[0]).device
    return torch.stack([n.to(device) for n in norms])


@torch.no_grad()
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

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs.
        max_norm: the threshold for each tensor, a positive float or a one-element tensor
            (a bad one under ``"skip"``: every gradient zeroed, NaN norms returned).
        norm_type: p, any number, or ``inf`` / ``"inf"`` (torch's meaning).
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        nonfinite: the non-finite policy (see ``gradclip.nonfinite``).
        process_group: the ranks holding the other shards of the gradients, or ``None``.

    Returns:
        The 1-D tensor of per-gradient norms before clipping.

    Raises:
        RuntimeError: a non-finite norm under ``nonfinite="error"``.
        ValueError: a bad ``max_norm``, ``norm_type`` or ``nonfinite``.
    """
    policy = check_policy(nonfinite)
    max_norm = check_max_norm(max_norm)
    p = check_norm_type(norm_type)
    named = named_grads(parameters)
    grads = [g for _, g in named]
    if not grads:
        return torch.zeros(0)
    result = per_tensor_grad_norms(grads, p, foreach, process_group)
    grads = local_tensors(grads)
    if policy == "error":
        raise_if_nonfinite(named, result.sum())
        raise_if_bad_threshold(max_norm)
    scale_(grads, clip_coefficient(max_norm, result).unbind(), foreach)
    if policy == "skip":
        result = skip_nonfinite_(grads, result, max_norm)
    return result


@torch.no_grad()
def clip_grad_value_(
    parameters: ParamsLike,
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place.

    Same as ``torch.nn.utils.clip_grad_value_`` (returns ``None``). Zero-element gradients,
    on which torch's foreach path fails, are skipped: there is nothing in them to clip.

    Args:
        parameters: parameters, one parameter, or ``named_parameters()`` pairs.
        clip_value: the largest magnitude kept, a number >= 0.
        foreach: as in ``torch.nn.utils.clip_grad_value_``.

    Returns:
        ``None``; the gradients are clamped in place.

    Raises:
        ValueError: ``clip_value`` is negative or not finite.

    References:
        ``torch.nn.utils.clip_grad_value_``; element-wise clipping: Mikolov, 2012 (PhD
        thesis), discussed by Pascanu, Mikolov & Bengio, 2013.
    """
    clip_value = check_positive_number(clip_value, "clip_value", allow_zero=True)
    parameters = reiterable(parameters)
    plain, buffers = plain_or_flat_grads(parameters)
    if plain is not None:  # a plain list: torch's kernels, types looked up once, no names
        clamp_(nonempty(plain), -clip_value, clip_value, foreach, plain=True)
        return
    grads = buffers or grad_buffers(parameters) or [g for _, g in named_grads(parameters)]
    clamp_grads_(nonempty(local_tensors(grads)), -clip_value, clip_value, foreach)


def nonempty(tensors: list[Tensor]) -> list[Tensor]:
    """``tensors`` without the zero-element ones (torch's foreach clamp fails on them)."""
    if all(map(Tensor.numel, tensors)):  # the common case: no per-tensor Python call
        return tensors
    return [t for t in tensors if t.numel() > 0]


def clamp_grads_(
    grads: Sequence[Tensor],
    low: float,
    high: float,
    foreach: bool | None,
    *,
    one_pass: bool = False,
) -> None:
    """Clamp every gradient element into ``[low, high]`` in place (torch's kernel order).

    Args:
        grads: the gradients (local, none with zero elements).
        low: the smallest value kept.
        high: the largest value kept.
        foreach: as in ``torch.nn.utils.clip_grad_value_``.
        one_pass: large gradients in one read-write pass (same numbers; see
            ``gradclip._kernels.clamp_``), for the strategies; the drop-in keeps torch's.
    """
    buffers = whole_flat_buffers(grads)
    if buffers is not None:  # gradclip.flat: one pass per buffer, same numbers as min then max
        clamp_(buffers, low, high, foreach=False)
    else:
        clamp_(grads, low, high, foreach, one_pass=one_pass)
