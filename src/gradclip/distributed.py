"""Global norms over sharded gradients: DTensor meshes (FSDP2, tensor, expert parallel) and
process groups (pipeline stages, hand-made shards).

Clipping by norm must use the norm of the *whole* gradient, and every rank must reach the same
decision, or replicas silently diverge. The rule, stated here once:

    **The parameters given to a call are this rank's part. Meshes reduce DTensors;
    ``process_group`` joins the parts.**

- A DTensor's contribution is reduced over the mesh dimensions that *shard* it: every
  placement that holds a piece (``Shard``, ``_StridedShard``, and any other placement that is
  neither ``Replicate`` nor ``Partial``: a placement is judged by what it does, not by its
  class). A dimension that replicates it counts it once. A ``Partial`` placement is reduced
  before any norm is taken.
- Meshes cut from one root mesh (``mesh["dp"]``, ``mesh["tp"]``, flattened dimensions) share
  its coordinates: a DTensor on a sub-mesh is a copy along the root dimensions it does not
  span (the LayerNorm that FSDP shards over ``dp`` is the same on every ``tp`` rank).
- Ordinary tensors are this rank's own (without ``process_group``: the same on every rank).
- ``process_group=`` joins this rank's part, already reduced over its meshes, with the parts
  of the group's other ranks (pipeline stages), as torchtitan does across ``pp_mesh``: the
  p-th powers are summed (``max`` for ``inf``). The group must not share any rank but this one
  with a DTensor's mesh (that DTensor would be counted once per rank): ``ValueError``.
- Per-tensor and per-unit norms (``clip_grad_norm_per_tensor_``, AGC) belong to one tensor: a
  DTensor's are reduced over its mesh only, an ordinary tensor's over ``process_group``,
  whose ranks then hold its dim-0 shards.

In formulas, with ``c_r`` the contribution of rank ``r``'s own pieces:

    ||g||_p = (sum over ranks r of c_r) ** (1/p),   c_r = sum_i ||g_i local||_p^p   (SUM)
    ||g||_inf = max over ranks r of max_i ||g_i local||_inf                        (MAX)

Collectives: contributions are grouped by the set of ranks they are reduced over (for each
root mesh, the ranks spanning every dimension that shards one of its DTensors; copies count
only on the rank at coordinate 0 of the copying dimensions), and each distinct set takes one
all-reduce of one stacked tensor, over its mesh dimension, the world, or a flattened group
made once and cached. Then one all-reduce over ``process_group``. An all-DTensor model on a
2-D FSDP x TP mesh costs one all-reduce, as torch's single-mesh case does; a pipeline stage
of it two. Local norms are stacked once per group (never a ``torch.stack`` of DTensors: the
quadratic cost of pytorch issue 169445) and accumulated in float32 at least.

The result is an ordinary tensor holding the global norm on every rank (torch hands back a
DTensor with a ``Partial`` placement that users misread: pytorch issue 170862). Only
collectives on device tensors: no ``.item()``. A NaN on one rank makes every rank see a
non-finite norm: for ``inf`` norms NaN becomes ``+inf`` before the MAX reduction, whose NaN
handling is not portable across backends.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from torch import Tensor

from gradclip._kernels import per_tensor_norms

if TYPE_CHECKING:  # imported at run time only once a DTensor exists (see _dtensor_type)
    from torch.distributed.tensor import DTensor

# Gradients narrower than this are normed in it: bf16 partial sums would lose the small parts.
ACCUMULATION_DTYPE = torch.float32


def _dtensor_type() -> type[DTensor] | None:
    # No DTensor can exist before its module is imported: looking in sys.modules spares every
    # single-process call the ~1 s import of torch.distributed.tensor.
    module = sys.modules.get("torch.distributed.tensor")
    dtensor: type[DTensor] | None = getattr(module, "DTensor", None)
    return dtensor


def is_dtensor(tensor: Tensor) -> TypeGuard[DTensor]:
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


def local_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Every tensor as this rank's local shard (ordinary tensors pass through)."""
    dtensor = _dtensor_type()
    if dtensor is None:  # the common single-process case: no per-tensor check
        return list(tensors)
    return [t.to_local() if isinstance(t, dtensor) else t for t in tensors]


def needs_reduction(tensors: Sequence[Tensor], process_group: Any) -> bool:
    """Whether the norm of ``tensors`` is a distributed quantity."""
    return process_group is not None or any_dtensor(tensors)


def is_sharding(placement: Any) -> bool:
    """Whether a DTensor placement holds a piece of the tensor on each rank of its dimension.

    Judged by what the placement does, not by its class: ``_StridedShard`` (FSDP2 over tensor
    parallel) is no ``Shard`` subclass in torch 2.13, and a future placement may not be either.

    Args:
        placement: a ``torch.distributed.tensor`` placement.

    Returns:
        ``True`` unless it is ``Replicate`` or ``Partial`` (whose summands are reduced first).
    """
    return not (placement.is_replicate() or placement.is_partial())


# --------------------------------------------------------------------------------------------
# Mesh frames: every mesh located in the coordinates of its root mesh.


@dataclass(frozen=True)
class MeshFrame:
    """A mesh located in its root mesh's coordinates, as seen from this rank.

    Attributes:
        root: the mesh whose coordinates are used (the mesh itself when its root is unknown,
            or when its dimensions are not whole root dimensions, as after an unflatten).
        rank_grid: the global ranks of ``root``, shaped as ``root``.
        coordinate: this rank's coordinate in ``root``.
        dims: for each dimension of the mesh, the root dimensions (of size > 1) it spans.
        copies: root dimensions (of size > 1) the mesh does not span: it is a copy along them.
    """

    root: Any
    rank_grid: Tensor
    coordinate: tuple[int, ...]
    dims: tuple[frozenset[int], ...]
    copies: frozenset[int]
    ranks_over: dict[frozenset[int], tuple[int, ...]] = field(default_factory=dict, compare=False)

    def ranks_spanning(self, dims: frozenset[int]) -> tuple[int, ...]:
        """The global ranks varying along ``dims`` with this rank's other coordinates, sorted."""
        if dims not in self.ranks_over:
            index = tuple(slice(None) if k in dims else c for k, c in enumerate(self.coordinate))
            self.ranks_over[dims] = tuple(sorted(self.rank_grid[index].flatten().tolist()))
        return self.ranks_over[dims]


# id(mesh) -> (mesh, rank, frame); the mesh is kept to tell a reused id from the same mesh.
_FRAMES: dict[int, tuple[Any, int, MeshFrame | None]] = {}


def mesh_frame(mesh: Any) -> MeshFrame | None:
    """``mesh`` located in its root mesh (computed once per mesh), or ``None`` off the mesh.

    Args:
        mesh: a ``DeviceMesh``.

    Returns:
        Its frame; ``None`` where this rank is not in ``mesh``.
    """
    import torch.distributed as dist

    rank = dist.get_rank()
    cached = _FRAMES.get(id(mesh))
    if cached is not None and cached[0] is mesh and cached[1] == rank:
        return cached[2]
    frame = _locate(mesh)
    _FRAMES[id(mesh)] = (mesh, rank, frame)
    return frame


def _root_mesh(mesh: Any) -> Any:
    root = getattr(mesh, "_get_root_mesh", None)
    if root is not None:
        return root() or mesh
    try:  # torch < 2.8 kept the root in a registry
        from torch.distributed.device_mesh import _mesh_resources

        return _mesh_resources.get_root_mesh(mesh) or mesh
    except (ImportError, AttributeError):
        return mesh


def _locate(mesh: Any) -> MeshFrame | None:
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return None
    root = _root_mesh(mesh)
    if root is not mesh and root.get_coordinate() is not None:
        dims = _root_dims(mesh, tuple(coordinate), root.mesh)
        if dims is not None:
            return _frame(root, tuple(root.get_coordinate()), dims)
    own_dims = tuple(frozenset([d]) if size > 1 else frozenset() for d, size in enumerate(mesh.shape))
    return _frame(mesh, tuple(coordinate), own_dims)


def _frame(root: Any, coordinate: tuple[int, ...], dims: tuple[frozenset[int], ...]) -> MeshFrame:
    rank_grid = root.mesh
    spanned = frozenset().union(*dims)
    copies = frozenset(k for k, size in enumerate(rank_grid.shape) if size > 1) - spanned
    return MeshFrame(root, rank_grid, coordinate, dims, copies)


def _root_dims(
    mesh: Any, coordinate: tuple[int, ...], root_grid: Tensor
) -> tuple[frozenset[int], ...] | None:
    """The root dimensions each dimension of ``mesh`` spans; ``None`` unless they are whole
    root dimensions, disjoint (then ``mesh`` is its own frame)."""
    position = dict(zip(root_grid.flatten().tolist(), itertools.product(*map(range, root_grid.shape)),
                        strict=True))
    dims = []
    for d in range(len(coordinate)):
        index = tuple(slice(None) if k == d else c for k, c in enumerate(coordinate))
        line = mesh.mesh[index].flatten().tolist()
        if any(rank not in position for rank in line):
            return None
        coords = [position[rank] for rank in line]
        varying = frozenset(k for k in range(root_grid.ndim) if len({c[k] for c in coords}) > 1)
        if len(line) != math.prod(root_grid.shape[k] for k in varying):
            return None
        dims.append(varying)
    if sum(map(len, dims)) != len(frozenset().union(*dims)):
        return None
    return tuple(dims)


# --------------------------------------------------------------------------------------------
# Reduction groups: one per distinct set of ranks.

# sorted ranks -> (the world group it was made under, the group): a flattened group is made once.
_FLATTENED_GROUPS: dict[tuple[int, ...], tuple[Any, Any]] = {}


def process_group_over(ranks: tuple[int, ...], frame: MeshFrame | None = None,
                       dims: frozenset[int] = frozenset()) -> Any:
    """The process group of exactly ``ranks``: the world, a mesh dimension's, or one made once.

    Args:
        ranks: the sorted global ranks (this rank among them).
        frame: the frame ``ranks`` were taken from, whose mesh groups are reused.
        dims: the root dimensions of ``frame`` that ``ranks`` span.

    Returns:
        A process group; a new one (``new_group`` with local synchronisation: only the
        members take part) is cached for every later call.
    """
    import torch.distributed as dist

    world = dist.group.WORLD
    if len(ranks) == dist.get_world_size():
        return world
    if frame is not None and len(dims) == 1:
        return frame.root.get_group(next(iter(dims)))
    cached = _FLATTENED_GROUPS.get(ranks)
    if cached is None or cached[0] is not world:
        cached = (world, dist.new_group(list(ranks), use_local_synchronization=True))
        _FLATTENED_GROUPS[ranks] = cached
    return cached[1]


@dataclass
class ReductionGroup:
    """The tensors whose pieces are reduced over one set of ranks.

    Attributes:
        ranks: the sorted global ranks.
        handle: their process group.
        positions: the tensors' positions in the call's list.
        counted: for each, whether this rank counts its piece (copies count on one rank only).
    """

    ranks: tuple[int, ...]
    handle: Any
    positions: list[int] = field(default_factory=list)
    counted: list[bool] = field(default_factory=list)


@dataclass
class ReductionPlan:
    """How the pieces of one call's tensors are reduced (see the module docstring).

    Attributes:
        locals: every tensor as this rank's local piece (``Partial`` reduced), in order.
        own: positions of the tensors that need no reduction (ordinary tensors, whole DTensors).
        groups: the reduction groups, sorted by ranks (the same order on every rank).
        meshes: every distinct mesh of the DTensors, in order of first appearance.
    """

    locals: list[Tensor]
    own: list[int]
    groups: list[ReductionGroup]
    meshes: list[Any]

    def counted_locals(self, group: ReductionGroup) -> list[Tensor]:
        """The local pieces this rank counts in ``group``."""
        return [self.locals[i] for i, counted in zip(group.positions, group.counted, strict=True)
                if counted]


@dataclass(frozen=True)
class _Layout:
    """One (mesh, placements) lifted to its root frame: what each root dimension holds."""

    frame: MeshFrame | None
    summed: frozenset[int]  # pieces of the same quantity: they add up
    distinct: frozenset[int]  # pieces that are other rows (units kept whole)
    copies: frozenset[int]
    partial: bool


def _layout(mesh: Any, placements: tuple[Any, ...], keep_rows: bool) -> _Layout:
    frame = mesh_frame(mesh)
    partial = any(p.is_partial() for p in placements)
    if frame is None:
        return _Layout(None, frozenset(), frozenset(), frozenset(), partial)
    summed: set[int] = set()
    distinct: set[int] = set()
    copies = set(frame.copies)
    for dims, placement in zip(frame.dims, placements, strict=True):
        if not is_sharding(placement):  # Replicate, or Partial once reduced
            copies |= dims
        elif keep_rows and getattr(placement, "dim", None) == 0:
            distinct |= dims
        else:
            summed |= dims
    return _Layout(frame, frozenset(summed), frozenset(distinct), frozenset(copies), partial)


def _without_partial(tensor: DTensor) -> DTensor:
    # A Partial placement holds unreduced summands: reduce them before taking any norm.
    from torch.distributed.tensor import Replicate

    placements = [Replicate() if p.is_partial() else p for p in tensor.placements]
    return tensor.redistribute(tensor.device_mesh, placements)


def _is_one_unit(tensor: Tensor) -> bool:
    # squeeze() on a DTensor sharded along a size-1 dim fails: count the dims instead.
    return sum(size != 1 for size in tensor.shape) <= 1


def reduction_plan(
    tensors: Sequence[Tensor],
    process_group: Any = None,
    *,
    per_unit: bool = False,
    per_tensor: bool = False,
    with_locals: bool = True,
) -> ReductionPlan:
    """Group ``tensors`` by the ranks their pieces are reduced over (the module's rule).

    Args:
        tensors: ordinary tensors and DTensors.
        process_group: the group of ``process_group=``.
        per_unit: the quantities are per dim-0 row (AGC units): pieces of other rows (dim-0
            shards of tensors with more than one unit) are never added up.
        per_tensor: the quantities belong to each tensor: ordinary tensors are reduced over
            ``process_group`` (they are its ranks' shards); otherwise they are this rank's own.
        with_locals: also take the local pieces (``Partial`` DTensors are then reduced).

    Returns:
        The plan: local pieces, and the groups in an order every rank shares.

    Raises:
        ValueError: ``process_group`` shares ranks other than this one with a DTensor's mesh.
    """
    layouts: dict[tuple[Any, ...], _Layout] = {}
    entries: list[tuple[int, _Layout]] = []
    plan = ReductionPlan([], [], [], [])
    dtensor = _dtensor_type()
    for position, tensor in enumerate(tensors):
        if dtensor is None or not isinstance(tensor, dtensor):
            plan.locals.append(tensor)
            plan.own.append(position)
            continue
        keep_rows = per_unit and not _is_one_unit(tensor)
        key = (tensor.device_mesh, tensor.placements, keep_rows)
        layout = layouts.get(key)
        if layout is None:
            layout = layouts[key] = _layout(*key)
            if tensor.device_mesh not in plan.meshes:
                plan.meshes.append(tensor.device_mesh)
        if with_locals:
            plan.locals.append((_without_partial(tensor) if layout.partial else tensor).to_local())
        else:
            plan.locals.append(tensor)
        entries.append((position, layout))
    _check_joinable(plan.meshes, process_group)
    _assign_groups(plan, entries)
    if per_tensor or per_unit:
        _assign_own_to_process_group(plan, tensors, process_group, per_unit)
    return plan


def _assign_groups(plan: ReductionPlan, entries: list[tuple[int, _Layout]]) -> None:
    """Put each DTensor in the widest group of its root frame that it may join, copies masked."""
    widest: dict[int, frozenset[int]] = {}
    for _, layout in entries:
        if layout.frame is not None:
            key = id(layout.frame.root)
            widest[key] = widest.get(key, frozenset()) | layout.summed
    groups: dict[tuple[int, ...], ReductionGroup] = {}
    for position, layout in entries:
        frame = layout.frame
        if frame is None:  # this rank holds no piece: nothing to count, nothing to join
            plan.own.append(position)
            continue
        dims = widest[id(frame.root)]
        if dims & layout.distinct:  # other rows along a wide dimension: only its own
            dims = layout.summed
        if not dims:
            plan.own.append(position)
            continue
        ranks = frame.ranks_spanning(dims)
        group = groups.get(ranks)
        if group is None:
            group = groups[ranks] = ReductionGroup(ranks, process_group_over(ranks, frame, dims))
        group.positions.append(position)
        group.counted.append(all(frame.coordinate[k] == 0 for k in layout.copies & dims))
    plan.own.sort()
    plan.groups.extend(groups[ranks] for ranks in sorted(groups))


def _assign_own_to_process_group(
    plan: ReductionPlan, tensors: Sequence[Tensor], process_group: Any, per_unit: bool
) -> None:
    """Per-tensor quantities: ordinary tensors are dim-0 shards over ``process_group``."""
    if process_group is None:
        return
    import torch.distributed as dist

    shards = [i for i in plan.own if not is_dtensor(tensors[i])
              and not (per_unit and not _is_one_unit(tensors[i]))]
    if not shards:
        return
    ranks = tuple(sorted(dist.get_process_group_ranks(process_group)))
    group = next((g for g in plan.groups if g.ranks == ranks), None)
    if group is None:
        group = ReductionGroup(ranks, process_group)
        plan.groups.append(group)
        plan.groups.sort(key=lambda g: g.ranks)
    group.positions.extend(shards)
    group.counted.extend([True] * len(shards))
    plan.own = [i for i in plan.own if i not in set(shards)]


def _check_joinable(meshes: Sequence[Any], process_group: Any) -> None:
    if process_group is None or not meshes:
        return
    import torch.distributed as dist

    joined = set(dist.get_process_group_ranks(process_group))
    rank = dist.get_rank()
    for mesh in meshes:
        shared = joined & set(mesh.mesh.flatten().tolist()) - {rank}
        if shared:
            raise ValueError(
                f"process_group joins this rank's part with the parts of other ranks, but ranks "
                f"{sorted(shared)} of it already hold pieces of DTensors on {mesh}, which would "
                "then be counted more than once; pass process_group=None (meshes reduce "
                "DTensors), or a group with one rank per part (the pipeline-stage group)"
            )


# --------------------------------------------------------------------------------------------
# Norms.


@dataclass(frozen=True)
class NormReduction:
    """How the pieces' norms of one ``norm_type`` combine: summands, the collective, the root.

    ``p`` finite: summands ``n^p``, SUM, root ``s^(1/p)``; ``inf``: ``n``, MAX, no root.
    (p <= 0 has no such reduction: the ops refuse it on sharded tensors.)
    """

    norm_type: float

    @property
    def is_max(self) -> bool:
        """Whether pieces combine by their maximum (``inf``) rather than a sum."""
        return math.isinf(self.norm_type)

    def summands(self, norms: Tensor) -> Tensor:
        """Per-piece norms (at least float32) as the values the collective adds up."""
        return norms if self.is_max else norms.pow(self.norm_type)

    def combine(self, summands: Tensor) -> Tensor:
        """The summands of one rank (1-D) as one 0-dim contribution (0 if there are none)."""
        if not self.is_max:
            return summands.sum()
        return summands.amax() if summands.numel() else summands.new_zeros(())

    def root(self, total: Tensor) -> Tensor:
        """The norm from the reduced summands."""
        return total if self.is_max else total.pow(1.0 / self.norm_type)

    def all_reduce_(self, values: Tensor, group: Any) -> Tensor:
        """All-reduce ``values`` over ``group``: SUM, or MAX with NaN made ``+inf`` first (the
        backends' MAX may drop a NaN; ``+inf`` keeps it visible as non-finite)."""
        import torch.distributed as dist

        if not self.is_max:
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
            return values
        values = torch.where(torch.isnan(values), math.inf, values)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=group)
        return values


def wide_norms(tensors: Sequence[Tensor], norm_type: float, foreach: bool | None) -> list[Tensor]:
    """The p-norm of each tensor, in input order, at least in float32 (bf16 norms lose bits).

    Args:
        tensors: local tensors.
        norm_type: p.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.

    Returns:
        One 0-dim norm per tensor, in ``promote(dtype, float32)``.
    """
    narrow = [i for i, t in enumerate(tensors) if _is_narrow(t.dtype)]
    if not narrow:
        return [n.to(torch.promote_types(n.dtype, ACCUMULATION_DTYPE))
                for n in per_tensor_norms(tensors, norm_type, foreach, input_order=True)]
    norms = wide_norms([t for t in tensors if not _is_narrow(t.dtype)], norm_type, foreach)
    wide = iter(norms)
    return [_narrow_norm(t, norm_type) if _is_narrow(t.dtype) else next(wide) for t in tensors]


def _is_narrow(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point and torch.finfo(dtype).bits < 32


def _narrow_norm(tensor: Tensor, norm_type: float) -> Tensor:
    if tensor.numel() == 0:  # torch cannot take the inf norm of an empty tensor
        return torch.zeros((), dtype=ACCUMULATION_DTYPE, device=tensor.device)
    norm: Tensor = torch.linalg.vector_norm(tensor, norm_type, dtype=ACCUMULATION_DTYPE)
    return norm


def _contribution(
    pieces: Sequence[Tensor], reduction: NormReduction, foreach: bool | None, device: torch.device
) -> Tensor:
    """One rank's 0-dim contribution of ``pieces``: the norms stacked once, then combined."""
    if not pieces:
        return torch.zeros((), dtype=ACCUMULATION_DTYPE, device=device)
    norms = wide_norms(pieces, reduction.norm_type, foreach)
    return reduction.combine(reduction.summands(torch.stack([n.to(device) for n in norms])))


def distributed_total_norm(
    tensors: Sequence[Tensor],
    norm_type: float,
    foreach: bool | None,
    process_group: Any = None,
) -> Tensor:
    """Global p-norm of (possibly sharded) ``tensors``, the same ordinary tensor on every rank.

    Args:
        tensors: this rank's part: ordinary tensors and DTensors (see the module's rule); may
            be empty when ``process_group`` is given (the rank still joins the others).
        norm_type: p.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        process_group: the group joining this rank's part with the others', or ``None``.

    Returns:
        The 0-dim norm, in the promoted dtype of ``tensors``; one all-reduce per distinct
        group of ranks, then one over ``process_group``.

    Raises:
        ValueError: ``process_group`` overlaps a DTensor's mesh.
    """
    reduction = NormReduction(norm_type)
    if tensors:
        part = _summed_part(tensors, reduction, foreach, process_group)
    else:
        part = torch.zeros((), device=_device_of(process_group))
    if process_group is not None:
        part = reduction.all_reduce_(part, process_group)
    total = reduction.root(part)
    return total.to(_norm_dtype(tensors)) if tensors else total


def _summed_part(
    tensors: Sequence[Tensor], reduction: NormReduction, foreach: bool | None, process_group: Any
) -> Tensor:
    """This rank's part: its own pieces, plus each group's pieces reduced over the group."""
    plan = reduction_plan(tensors, process_group)
    device = plan.locals[0].device
    parts = [_contribution([plan.locals[i] for i in plan.own], reduction, foreach, device)]
    for group in plan.groups:
        contribution = _contribution(plan.counted_locals(group), reduction, foreach, device)
        parts.append(reduction.all_reduce_(contribution, group.handle))
    return reduction.combine(torch.stack(parts))


def _device_of(process_group: Any) -> torch.device:
    # A rank with nothing to contribute still joins the others, on the group's device.
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend(process_group)) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _norm_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def reduce_each_(plan: ReductionPlan, values: list[Tensor], reduction: NormReduction) -> list[Tensor]:
    """Reduce each tensor's local ``values`` over its group: one all-reduce per group.

    Args:
        plan: the call's plan.
        values: for each tensor (by position), its local summands, any shape, at least float32.
        reduction: how they combine; a piece this rank does not count contributes 0.

    Returns:
        ``values`` with every grouped entry replaced by its reduced value (same shape).
    """
    reduced = list(values)
    for group in plan.groups:
        pieces = [values[i] if counted else torch.zeros_like(values[i])
                  for i, counted in zip(group.positions, group.counted, strict=True)]
        dtype = pieces[0].dtype
        for piece in pieces[1:]:
            dtype = torch.promote_types(dtype, piece.dtype)
        flat = reduction.all_reduce_(torch.cat([p.reshape(-1).to(dtype) for p in pieces]),
                                     group.handle)
        for i, piece in zip(group.positions, flat.split([p.numel() for p in pieces]), strict=True):
            reduced[i] = piece.view_as(values[i])
    return reduced


def _reduced_per_tensor(
    plan: ReductionPlan, reduction: NormReduction, foreach: bool | None
) -> list[Tensor]:
    norms = wide_norms(plan.locals, reduction.norm_type, foreach)
    summands = [reduction.summands(n) for n in norms]
    return [reduction.root(s) for s in reduce_each_(plan, summands, reduction)]


def distributed_per_tensor_norms(
    tensors: Sequence[Tensor], norm_type: float, foreach: bool | None, process_group: Any = None
) -> list[Tensor]:
    """The global norm of each (possibly sharded) tensor, in input order, one collective a group.

    Args:
        tensors: DTensors (reduced over their meshes) and ordinary tensors (dim-0 shards over
            ``process_group`` if given).
        norm_type: p.
        foreach: as in ``torch.nn.utils.clip_grad_norm_``.
        process_group: the ranks holding the other shards of the ordinary tensors, or ``None``.

    Returns:
        One 0-dim norm per tensor, in its dtype.

    Raises:
        ValueError: ``process_group`` overlaps a DTensor's mesh.
    """
    plan = reduction_plan(tensors, process_group, per_tensor=True)
    norms = _reduced_per_tensor(plan, NormReduction(norm_type), foreach)
    return [norm.to(local.dtype) for norm, local in zip(norms, plan.locals, strict=True)]


def sharded_unitwise_norms(tensors: Sequence[Tensor], process_group: Any = None) -> list[Tensor]:
    """AGC's unit-wise L2 norms of possibly sharded tensors, shaped to broadcast on each local
    shard: one all-reduce per group of ranks for all of them.

    A unit is a dim-0 slice (an output row) or, for scalars and vectors, the whole tensor.
    A shard along dim 0 keeps rows whole (FSDP2, colwise TP): their norms stay local. A
    whole-tensor unit, or a shard along another dim (rowwise TP shards the input dim), is
    summed (squares) over the ranks holding its pieces. An ordinary tensor with
    ``process_group`` is a dim-0 shard: only its whole-tensor unit is reduced.

    Args:
        tensors: weights or gradients, ordinary or DTensors.
        process_group: the ranks holding the other dim-0 shards of the ordinary tensors.

    Returns:
        For each tensor, a 0-dim norm (one unit) or its local ``(rows, 1, ..., 1)`` norms.

    Raises:
        ValueError: ``process_group`` overlaps a DTensor's mesh.
    """
    plan = reduction_plan(tensors, process_group, per_unit=True)
    squares = []
    for tensor, local in zip(tensors, plan.locals, strict=True):
        wide = local.to(torch.promote_types(local.dtype, ACCUMULATION_DTYPE))
        if _is_one_unit(tensor):
            squares.append(wide.square().sum())
        else:
            squares.append(wide.square().sum(dim=tuple(range(1, wide.ndim)), keepdim=True))
    reduced = reduce_each_(plan, squares, NormReduction(2.0))
    return [s.sqrt().to(local.dtype) for s, local in zip(reduced, plan.locals, strict=True)]


def any_on_any_rank(flag: Tensor, tensors: Sequence[Tensor], process_group: Any = None) -> Tensor:
    """A per-rank bool ``flag`` (e.g. "this shard was clipped") OR-ed over every rank holding a
    piece of ``tensors`` and over ``process_group``: the same answer on every rank.

    Args:
        flag: a 0-dim bool tensor.
        tensors: the call's tensors (their meshes give the groups; nothing is read from them).
        process_group: the parts' group, or ``None``.

    Returns:
        The OR-ed flag; unsharded inputs without ``process_group`` return ``flag`` unchanged.
        One all-reduce per distinct group, as for the norm.

    Raises:
        ValueError: ``process_group`` overlaps a DTensor's mesh.
    """
    import torch.distributed as dist

    groups = [g.handle for g in reduction_plan(tensors, process_group, with_locals=False).groups]
    if process_group is not None:
        groups.append(process_group)
    if not groups:
        return flag
    votes = flag.to(torch.int32)
    for group in groups:
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=group)
    return votes.bool()
