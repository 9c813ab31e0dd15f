"""The kernels every layer shares: grouping, the foreach choice, norms, scale, clamp.

Tensors are grouped once by (device, dtype), then each group takes torch's ``foreach`` fast
path (one kernel call for the whole group) or a per-tensor loop, by torch's own rule. The
clip coefficient is computed here too, the way torch computes it, so that every op built on
these kernels is bit-identical to ``torch.nn.utils``.

This is the only module that imports torch's private ``torch.utils._foreach_utils`` (the
helpers ``torch.nn.utils.clip_grad`` uses). If a torch release moves them, the pure-Python
versions below take over (``TORCH_FOREACH_UTILS is None``): the same rules, and the same
groups in order of first appearance, where torch's C++ grouping orders groups by a hash.
With one or two (device, dtype) groups -- every model that is not mixing three dtypes --
the results are bit-identical either way; with three or more, the total norm may differ
from torch's in the last bit (the per-group norms are added in another order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

TORCH_FOREACH_UTILS: ModuleType | None
try:
    from torch.utils import _foreach_utils as TORCH_FOREACH_UTILS
except ImportError:  # torch moved its private helpers: the pure-Python versions serve
    TORCH_FOREACH_UTILS = None

# torch adds this to the norm before dividing; matched for bit-identical coefficients.
CLIP_EPS = 1e-6

# Devices with foreach kernels, as torch.utils._foreach_utils lists them (CPU included); its
# PrivateUse1 backend would need another private call to name, so the fallback leaves it out.
FOREACH_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mtia")

Group = tuple[torch.device, list[Tensor], list[int]]


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> list[Group]:
    """Tensors grouped by (device, dtype), each group with its tensors' input positions.

    Args:
        tensors: the tensors to group (any devices and dtypes).

    Returns:
        ``(device, group, indices)`` triples, in torch's group order (see the module
        docstring for the fallback's order); ``group[k]`` is ``tensors[indices[k]]``.
    """
    if not tensors:  # torch's grouping kernel rejects an empty list
        return []
    if TORCH_FOREACH_UTILS is None:
        return _group_in_order_of_appearance(tensors)
    grouped = TORCH_FOREACH_UTILS._group_tensors_by_device_and_dtype(
        [list(tensors)], with_indices=True
    )
    return [(device, group, indices) for (device, _), ([group], indices) in grouped.items()]


def _group_in_order_of_appearance(tensors: Sequence[Tensor]) -> list[Group]:
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[int]]] = {}
    for index, tensor in enumerate(tensors):
        group, indices = groups.setdefault((tensor.device, tensor.dtype), ([], []))
        group.append(tensor)
        indices.append(index)
    return [(device, group, indices) for (device, _), (group, indices) in groups.items()]


def device_has_foreach_support(device: torch.device) -> bool:
    """Whether ``device`` has foreach kernels (torch's rule, also when torch's helper moved).

    Args:
        device: a device.

    Returns:
        ``True`` on CPU, CUDA and the other devices torch lists, outside TorchScript.
    """
    if TORCH_FOREACH_UTILS is not None:
        return bool(TORCH_FOREACH_UTILS._device_has_foreach_support(device))
    # torch.jit re-exports is_scripting without listing it in __all__ (torch's stubs' gap)
    return device.type in FOREACH_DEVICE_TYPES and not torch.jit.is_scripting()  # type: ignore[attr-defined]


def has_foreach_support(tensors: Sequence[Tensor], device: torch.device) -> bool:
    """Whether the foreach kernels take ``tensors``: a capable device, plain tensors only.

    Args:
        tensors: one (device, dtype) group.
        device: the group's device.

    Returns:
        ``True`` where ``foreach=None`` picks the foreach kernels.
    """
    if TORCH_FOREACH_UTILS is not None:
        return bool(TORCH_FOREACH_UTILS._has_foreach_support(list(tensors), device))
    # Subclasses (Parameter, DTensor) take the per-tensor path, as in torch.
    return device_has_foreach_support(device) and all(
        t is None or type(t) is Tensor for t in tensors
    )


def use_foreach(
    tensors: Sequence[Tensor], device: torch.device, foreach: bool | None, *, plain: bool = False
) -> bool:
    """torch's rule for one group: ``None`` picks foreach where supported; ``True`` insists.

    Args:
        tensors: one (device, dtype) group.
        device: the group's device.
        foreach: the caller's choice (``None``: decide).
        plain: the caller knows every tensor is an ordinary ``Tensor`` (its types were looked
            up once for the whole call), so the per-tensor type check is not repeated.

    Returns:
        Whether to run the group's foreach kernel.

    Raises:
        RuntimeError: ``foreach=True`` on a device without foreach kernels (torch's error).
    """
    if foreach is None:
        if plain:
            return device_has_foreach_support(device)
        return has_foreach_support(tensors, device)
    if foreach and not device_has_foreach_support(device):
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return bool(foreach)


def _group_norms(
    group: list[Tensor],
    norm_type: float,
    device: torch.device,
    foreach: bool | None,
    plain: bool = False,
) -> list[Tensor]:
    """The p-norm of each tensor of one (device, dtype) group, in the group's order."""
    if (math.isinf(norm_type) or norm_type < 0) and not all(map(Tensor.numel, group)):
        # torch cannot take these norms of an empty tensor; it gets the norm that leaves the
        # total unchanged: 0 for the max (inf), +inf for the min (-inf) and for p < 0 (inf^p = 0).
        nonempty = [t for t in group if t.numel() > 0]
        norms = iter(_group_norms(nonempty, norm_type, device, foreach, plain) if nonempty else [])
        neutral = 0.0 if norm_type > 0 else math.inf
        return [next(norms) if t.numel() > 0 else t.new_full((), neutral) for t in group]
    if use_foreach(group, device, foreach, plain=plain):
        return list(torch._foreach_norm(group, norm_type))
    return [torch.linalg.vector_norm(t, norm_type) for t in group]


def per_tensor_norms(
    tensors: Sequence[Tensor], norm_type: float, foreach: bool | None, *, input_order: bool = False
) -> list[Tensor]:
    """The p-norm of each tensor, one foreach kernel per (device, dtype) group where possible.

    Args:
        tensors: the tensors (any devices and dtypes).
        norm_type: p, any float (``torch.linalg.vector_norm``'s meaning).
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        input_order: give ``norms[i]`` for ``tensors[i]``; by default the norms come in
            torch's group order, the order in which torch stacks them for the total norm.

    Returns:
        One 0-dim norm per tensor, on its tensor's device.
    """
    norms: list[Tensor] = list(tensors) if input_order else []
    for device, group, indices in group_by_device_and_dtype(tensors):
        group_norms = _group_norms(group, norm_type, device, foreach)
        if not input_order:
            norms.extend(group_norms)
            continue
        for index, norm in zip(indices, group_norms, strict=True):
            norms[index] = norm
    return norms


def total_norm_of_groups(
    groups: Sequence[Group],
    norm_type: float,
    foreach: bool | None,
    first_device: torch.device,
    *,
    plain: bool = False,
) -> Tensor:
    """``||(||t_1||_p, ..., ||t_n||_p)||_p`` of grouped tensors, torch's kernels in torch's order.

    The per-tensor norms of each group are stacked in group order on ``first_device``, as
    ``torch.nn.utils.get_total_norm`` stacks them.

    Args:
        groups: ``group_by_device_and_dtype`` of the tensors, at least one group.
        norm_type: p, any float (``torch.linalg.vector_norm``'s meaning).
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        first_device: the device of the first tensor (before grouping), where the norm lives.
        plain: every tensor is an ordinary ``Tensor`` (see ``use_foreach``).

    Returns:
        The 0-dim total norm.
    """
    norms: list[Tensor] = []
    for device, group, _ in groups:
        norms.extend(_group_norms(group, norm_type, device, foreach, plain))
    if len(groups) > 1 or groups[0][0] != first_device:  # else no per-norm .to() call
        norms = [n.to(first_device) for n in norms]
    total_norm: Tensor = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    return total_norm


def clip_coefficient(max_norm: float | Tensor, total_norm: Tensor) -> Tensor:
    """``min(max_norm / (total_norm + 1e-6), 1)``, as a tensor on ``total_norm``'s device.

    Written as ``reciprocal(total_norm + 1e-6) * max_norm``: that is how torch evaluates
    ``float / tensor``, so the bits match torch for a float ``max_norm``. A tensor
    ``max_norm`` is multiplied as torch multiplies the Python float it would make of it
    (``float(max_norm)``, a host sync avoided here): in the op's compute dtype (float32 for
    16-bit norms), then rounded to the norm's dtype.

    Args:
        max_norm: the threshold, a float or a 0-dim tensor (an adaptive threshold).
        total_norm: the norm (0-dim, or one per tensor).

    Returns:
        The factor the gradients are multiplied by, at most 1, in ``total_norm``'s dtype.
    """
    reciprocal = torch.reciprocal(total_norm + CLIP_EPS)
    if isinstance(max_norm, Tensor):
        compute = torch.promote_types(total_norm.dtype, torch.float32)
        threshold = max_norm.to(device=total_norm.device, dtype=compute)
        coefficient = (reciprocal.to(compute) * threshold).to(total_norm.dtype)
    else:
        coefficient = reciprocal * max_norm
    return torch.clamp(coefficient, max=1.0)


def scale_(
    tensors: Sequence[Tensor], coefficients: Tensor | Sequence[Tensor], foreach: bool | None
) -> None:
    """Multiply every tensor in place by its coefficient, without a host sync.

    Args:
        tensors: the tensors to scale.
        coefficients: one 0-dim tensor for all, or one 0-dim tensor per tensor, in order.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
    """
    scale_groups_(group_by_device_and_dtype(tensors), coefficients, foreach)


def scale_groups_(
    groups: Sequence[Group],
    coefficients: Tensor | Sequence[Tensor],
    foreach: bool | None,
    *,
    plain: bool = False,
) -> None:
    """``scale_`` on tensors already grouped (``group_by_device_and_dtype``).

    Args:
        groups: the tensors' groups, with their input positions.
        coefficients: one 0-dim tensor for all, or one per tensor in input order.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        plain: every tensor is an ordinary ``Tensor`` (see ``use_foreach``).
    """
    for device, group, indices in groups:
        if isinstance(coefficients, Tensor):
            factors: Tensor | list[Tensor] = coefficients.to(device)
        else:
            factors = [coefficients[i].to(device) for i in indices]
        if use_foreach(group, device, foreach, plain=plain):
            torch._foreach_mul_(group, factors)
        else:
            for k, tensor in enumerate(group):
                tensor.mul_(factors if isinstance(factors, Tensor) else factors[k])


def representable_bound(bound: float, dtype: torch.dtype) -> float:
    """A clamp bound that ``dtype`` can hold: beyond its range, where it would round to.

    torch refuses a Python bound outside the tensor dtype's range (``clamp(x, max=1e39)`` on
    float32 raises an overflow error), although the answer is plain: every finite element
    lies inside, and an infinite one goes to the bound rounded to ``dtype`` (the largest
    finite value just past the range, ``inf`` further out). Bounds inside the range are
    returned unchanged, so those results stay torch's bit for bit.

    Args:
        bound: a clamp bound.
        dtype: the dtype of the clamped tensors.

    Returns:
        ``bound``, or its rounding to ``dtype`` where ``dtype`` cannot hold it.
    """
    if not dtype.is_floating_point or math.isinf(bound):
        return bound
    info = torch.finfo(dtype)
    if abs(bound) <= info.max:
        return bound
    # Round to nearest: past max + half an ulp the bound rounds to inf (a tie goes to inf too).
    half_ulp = info.eps * info.max / (2 - info.eps) / 2
    rounded = info.max if abs(bound) < info.max + half_ulp else math.inf
    return math.copysign(rounded, bound)


# From this size on a tensor's clamp is a memory pass, not a kernel call: one pass of
# clamp(min, max) instead of torch's clamp_min then clamp_max (the same numbers: both exact).
ONE_PASS_NUMEL = 1 << 16


def clamp_(
    tensors: Sequence[Tensor],
    low: float,
    high: float,
    foreach: bool | None,
    *,
    plain: bool = False,
    one_pass: bool = False,
) -> None:
    """Clamp every element into ``[low, high]`` in place, in torch's kernel order.

    Args:
        tensors: the tensors to clamp (no zero-element tensors: torch's foreach path fails).
        low: the smallest value kept.
        high: the largest value kept (bounds beyond the dtype's range are rounded to it,
            where torch would raise: ``representable_bound``).
        foreach: as in ``torch.nn.utils.clip_grad_value_``.
        plain: every tensor is an ordinary ``Tensor`` (see ``use_foreach``).
        one_pass: tensors of ``ONE_PASS_NUMEL`` elements or more are clamped by one
            ``clamp_(min, max)`` (one read-write pass) rather than torch's two foreach passes;
            the numbers are the same (clamping is exact, NaN stays NaN either way).
    """
    for device, group, _ in group_by_device_and_dtype(tensors):
        dtype = group[0].dtype
        group_low, group_high = representable_bound(low, dtype), representable_bound(high, dtype)
        if one_pass:
            for tensor in group:
                if tensor.numel() >= ONE_PASS_NUMEL:
                    tensor.clamp_(min=group_low, max=group_high)
            group = [t for t in group if t.numel() < ONE_PASS_NUMEL]
            if not group:
                continue
        if use_foreach(group, device, foreach, plain=plain):
            torch._foreach_clamp_min_(group, group_low)
            torch._foreach_clamp_max_(group, group_high)
        else:
            for tensor in group:
                tensor.clamp_(min=group_low, max=group_high)
