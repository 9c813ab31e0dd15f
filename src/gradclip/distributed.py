"""Global norms over sharded parameters: FSDP2 DTensors and hand-sharded process groups.

Clipping by norm must use the norm of the *whole* gradient, and every rank must reach the same
decision, or replicas silently diverge. The norm of a sharded gradient is reduced from each
rank's local contribution, in the domain where that is exact:

    ||g||_p = (sum over ranks of sum_i ||g_i local||_p^p) ** (1/p)      (all-reduce SUM)
    ||g||_inf = max over ranks of max_i ||g_i local||_inf             (all-reduce MAX)

- DTensors (``torch.distributed.fsdp.fully_shard``, tensor/expert parallel) are grouped by
  their mesh and placements; each group's contribution is all-reduced over the mesh
  dimensions it is sharded on (``Shard``), never over those it is replicated on. Groups from
  different meshes, and ordinary tensors (taken as replicated), add up to one global norm.
- ``process_group=`` declares that the ordinary tensors passed are this rank's shards of a
  larger gradient: their contribution is all-reduced over that group.

The result is an ordinary tensor holding the global norm on every rank (torch hands back a
DTensor with a ``Partial`` placement that users misread: pytorch issue 170862). The reduction
is asynchronous-friendly: no ``.item()``, only collectives on device tensors.

A NaN on one rank must make every rank see a non-finite norm (so that all skip together):
with ``inf`` norms NaN is turned into +inf before the MAX reduction, whose NaN handling is not
portable across backends.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import per_tensor_norms


def _dtensor_type() -> type | None:
    # No DTensor can exist before its module is imported: looking in sys.modules spares every
    # single-process call the ~1 s import of torch.distributed.tensor.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor``."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def any_dtensor(tensors: Sequence[Tensor]) -> bool:
    """Whether any of ``tensors`` is a DTensor (then norms need a reduction)."""
    dtensor = _dtensor_type()
    return dtensor is not None and any(isinstance(t, dtensor) for t in tensors)


def local_tensor(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (a view sharing its storage), or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def needs_reduction(tensors: Sequence[Tensor], process_group: Any) -> bool:
    """Whether the norm of ``tensors`` is a distributed quantity."""
    return process_group is not None or any_dtensor(tensors)


def _shard_groups(tensor: Tensor) -> tuple[Any, ...]:
    """The process groups over which ``tensor``'s contribution must be reduced."""
    from torch.distributed.tensor import Shard

    mesh = tensor.device_mesh
    return tuple(
        mesh.get_group(dim) for dim, placement in enumerate(tensor.placements) if isinstance(placement, Shard)
    )


def _without_partial(tensor: Tensor) -> Tensor:
    # A Partial placement holds unreduced summands: reduce them before taking any norm.
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.placement_types import Partial

    if not any(isinstance(p, Partial) for p in tensor.placements):
        return tensor
    placements = [Replicate() if isinstance(p, Partial) else p for p in tensor.placements]
    return tensor.redistribute(tensor.device_mesh, placements)


def reduction_groups(tensors: Sequence[Tensor], process_group: Any) -> list[tuple[tuple[Any, ...], list[Tensor]]]:
    """Local tensors grouped by the process groups their contribution is reduced over.

    The order is that of first appearance, the same on every rank, so that every rank issues
    the same collectives in the same order.
    """
    grouped: dict[tuple[int, ...], tuple[tuple[Any, ...], list[Tensor]]] = {}
    for tensor in tensors:
        if is_dtensor(tensor):
            tensor = _without_partial(tensor)
            groups = _shard_groups(tensor)
            local = tensor.to_local()
        else:
            groups = () if process_group is None else (process_group,)
            local = tensor
        key = tuple(id(g) for g in groups)
        grouped.setdefault(key, (groups, []))[1].append(local)
    return list(grouped.values())


def power_sum(norms: Sequence[Tensor], norm_type: float, device: torch.device) -> Tensor:
    """``sum n^p`` (or ``max n`` for ``inf``) of per-tensor norms, in at least float32."""
    if not norms:
        return torch.zeros((), device=device)
    stacked = torch.stack([n.to(device) for n in norms])
    stacked = stacked.to(torch.promote_types(stacked.dtype, torch.float32))
    if math.isinf(norm_type):
        return stacked.amax()
    return stacked.pow(norm_type).sum()


def all_reduce_contribution(contribution: Tensor, norm_type: float, groups: Sequence[Any]) -> Tensor:
    """All-reduce one contribution over each group: SUM of p-th powers, MAX for ``inf``."""
    import torch.distributed as dist

    if math.isinf(norm_type):
        contribution = torch.where(torch.isnan(contribution), math.inf, contribution)
        op = dist.ReduceOp.MAX
    else:
        op = dist.ReduceOp.SUM
    for group in groups:
        dist.all_reduce(contribution, op=op, group=group)
    return contribution


def combine_contributions(contributions: Sequence[Tensor], norm_type: float) -> Tensor:
    """The global norm from reduced contributions: ``(sum c) ** (1/p)`` or ``max c``."""
    stacked = torch.stack(list(contributions))
    if math.isinf(norm_type):
        return stacked.amax()
    return stacked.sum().pow(1.0 / norm_type)


def distributed_total_norm(
    tensors: Sequence[Tensor],
    norm_type: float,
    foreach: bool | None,
    process_group: Any = None,
) -> Tensor:
    """Global p-norm of (possibly sharded) ``tensors``, the same ordinary tensor on every rank."""
    device = local_tensor(tensors[0]).device
    contributions = []
    for groups, local in reduction_groups(tensors, process_group):
        contribution = power_sum(per_tensor_norms(local, norm_type, foreach), norm_type, device)
        contributions.append(all_reduce_contribution(contribution, norm_type, groups))
    total = combine_contributions(contributions, norm_type)
    return total.to(_norm_dtype(tensors))


def _norm_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def local_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Every tensor as this rank's local shard (ordinary tensors pass through)."""
    dtensor = _dtensor_type()
    if dtensor is None:  # the common single-process case: no per-tensor check
        return list(tensors)
    return [t.to_local() if isinstance(t, dtensor) else t for t in tensors]


def distributed_per_tensor_norms(
    tensors: Sequence[Tensor], norm_type: float, foreach: bool | None, process_group: Any = None
) -> list[Tensor]:
    """The global norm of each (possibly sharded) tensor, in input order, one collective a group."""
    positions = {id(t): i for i, t in enumerate(local_tensors(tensors))}
    norms: list[Tensor] = [tensors[0]] * len(tensors)
    for groups, local in reduction_groups(tensors, process_group):
        local_norms = torch.stack(per_tensor_norms(local, norm_type, foreach, input_order=True))
        wide = local_norms.to(torch.promote_types(local_norms.dtype, torch.float32))
        powers = wide if math.isinf(norm_type) else wide.pow(norm_type)
        reduced = all_reduce_contribution(powers, norm_type, groups)
        global_norms = reduced if math.isinf(norm_type) else reduced.pow(1.0 / norm_type)
        for tensor, norm in zip(local, global_norms.unbind(), strict=True):
            norms[positions[id(tensor)]] = norm.to(local_norms.dtype)
    return norms


def sharded_unitwise_norm(tensor: Tensor, process_group: Any = None) -> Tensor:
    """AGC's unit-wise norm of a possibly sharded tensor, shaped to broadcast on its local shard.

    A unit is a dim-0 slice (an output row) or, for scalars and vectors, the whole tensor.
    FSDP2 shards dim 0, which keeps rows whole: their norms stay local. A whole-tensor unit,
    or a shard along any other dim, is all-reduced (sum of squares) over its shard groups.
    With ``process_group``, ordinary tensors are hand-made dim-0 shards: only their
    whole-tensor units are reduced.
    """
    from torch.distributed.tensor import Shard

    # squeeze() on a DTensor sharded along a size-1 dim fails: count the dims instead.
    one_unit = sum(size != 1 for size in tensor.shape) <= 1
    if is_dtensor(tensor):
        tensor = _without_partial(tensor)
        mesh = tensor.device_mesh
        groups = [
            mesh.get_group(dim)
            for dim, placement in enumerate(tensor.placements)
            if isinstance(placement, Shard) and (one_unit or placement.dim != 0)
        ]
        local = tensor.to_local()
    else:
        groups = [process_group] if (one_unit and process_group is not None) else []
        local = tensor
    wide = local.to(torch.promote_types(local.dtype, torch.float32))
    if one_unit:
        squares = wide.square().sum()
    else:
        squares = wide.square().sum(dim=tuple(range(1, wide.ndim)), keepdim=True)
    for group in groups:
        all_reduce_contribution(squares, 2.0, [group])
    return squares.sqrt().to(local.dtype)


def shard_groups(tensors: Sequence[Tensor], process_group: Any = None) -> list[Any]:
    """Every process group some of ``tensors`` is sharded over (DTensor ``Shard`` mesh dims, and
    ``process_group`` if given), each once, in the same order on every rank."""
    groups: dict[int, Any] = {}
    if process_group is not None:
        groups[id(process_group)] = process_group
    for tensor in tensors:
        if is_dtensor(tensor):
            for group in _shard_groups(_without_partial(tensor)):
                groups.setdefault(id(group), group)
    return list(groups.values())


def any_on_any_rank(flag: Tensor, tensors: Sequence[Tensor], process_group: Any = None) -> Tensor:
    """A per-rank bool ``flag`` (e.g. "this shard was clipped") OR-ed over the shard groups of
    ``tensors``: the same answer on every rank. Unsharded inputs return ``flag`` unchanged."""
    import torch.distributed as dist

    groups = shard_groups(tensors, process_group)
    if not groups:
        return flag
    votes = flag.to(torch.int32)
    for group in groups:
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=group)
    return votes.bool()
