"""Flat gradient buffers: every ``.grad`` a view into one contiguous buffer per (device, dtype).

Clipping by norm reads every gradient to get the norm and then scales each one; with many
small tensors the cost is one kernel call per tensor, not memory traffic. After
``flatten_grads_(model)`` the gradients of ``model`` live in one buffer per (device, dtype),
and the functional ops (hence every strategy built on them) work on the buffers in O(1)
kernel calls instead of O(number of tensors).

The views stay valid:

- across ``optimizer.zero_grad()`` -- ``set_to_none=False`` zeroes the views in place; after
  ``set_to_none=True`` (torch's default) a hook that runs at the start of the next backward,
  before autograd accumulates, zeroes the buffer and puts the views back, so autograd adds
  into them in place (it only allocates a fresh gradient when ``.grad`` is ``None``);
- across autograd accumulation (micro-batches): ``AccumulateGrad`` adds in place.

Consequence: a flattened parameter that takes no part in a backward gets a zero gradient,
not ``None`` (as with ``zero_grad(set_to_none=False)``).

The fast path is taken only when the gradients of a call are exactly the registered views
(same tensor objects at the same addresses) and together cover whole buffers; a gradient
replaced by hand, a subset of the parameters, or a foreign tensor give the normal
per-tensor path, never a wrong answer.

Numerics: scaling and clamping are element-wise, so on a buffer they give bit-identical
gradients for a given coefficient. Norms are taken per gradient by default, as torch does,
so ``clip_grad_norm_`` stays bit-identical to torch; ``flatten_grads_(..., exact_norm=False)``
takes one reduction per buffer instead (fastest with many small tensors), which differs
from torch's norm of per-tensor norms in the last bits (relative 1e-6 in float32; the
``inf`` norm is identical).
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter

import torch
from torch import Tensor, nn

from gradclip.parameters import (
    PLAIN_GRAD_TYPES,
    ParamsLike,
    named_tensors,
    plain_parameter_grads,
)

# id(view) -> the buffer that owns it. Views are kept alive by their owner, so an id found
# here cannot belong to another object; entries vanish with their owner.
_OWNER_OF_VIEW: weakref.WeakValueDictionary[int, FlatGradBuffer] = weakref.WeakValueDictionary()
_OWNER_OF_PARAM: weakref.WeakValueDictionary[int, FlatGradBuffer] = weakref.WeakValueDictionary()
_OWNER_OF_BUFFER: weakref.WeakValueDictionary[int, FlatGradBuffer] = weakref.WeakValueDictionary()

_grad_of = attrgetter("grad")
_data_ptr_of = Tensor.data_ptr


class FlatGradBuffer:
    """One contiguous gradient buffer shared by parameters of one (device, dtype).

    Attributes:
        buffer: the 1-D tensor holding every gradient, in parameter order.
        params: the parameters whose ``.grad`` is a view into ``buffer``.
        views: those views, ``views[i]`` shaped like ``params[i]``.
        exact_norm: take norms per view, as torch does (bit-identical), rather than as one
            reduction over the buffer (fastest).

    Args:
        params: the parameters to hold, all of one device and dtype, at least one.
        exact_norm: as the attribute.

    Raises:
        ValueError: ``params`` is empty.
        TypeError: ``params`` holds something other than tensors.
    """

    def __init__(self, params: Sequence[Tensor], exact_norm: bool = True) -> None:
        self.exact_norm = exact_norm
        if isinstance(params, Tensor):
            raise TypeError("params must be a sequence of parameters, got one tensor "
                            "(iterating it would give its rows; pass [tensor])")
        params = list(params)
        if not params:
            raise ValueError("params must hold at least one parameter, got an empty sequence")
        if not all(isinstance(p, Tensor) for p in params):
            kinds = sorted({type(p).__name__ for p in params if not isinstance(p, Tensor)})
            raise TypeError(f"params must be tensors, got {', '.join(kinds)}")
        if not all(p.requires_grad for p in params):
            raise ValueError("params must be parameters that require grad (their gradients "
                             "live in the buffer); a tensor with requires_grad=False has none")
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("params must share one dtype and device (flatten_grads_ groups "
                             "them; one buffer holds one group)")
        total = sum(p.numel() for p in params)
        self.buffer = torch.zeros(total, dtype=first.dtype, device=first.device)
        self.params = list(params)
        self.views: list[Tensor] = []
        offset = 0
        for p in self.params:
            self.views.append(self.buffer[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        self.view_ids = tuple(map(id, self.views))
        self.view_addresses = tuple(map(_data_ptr_of, self.views))
        self.address_of_view = dict(zip(self.view_ids, self.view_addresses, strict=True))
        self._hooks = [
            p.register_hook(functools.partial(self._reattach_before_accumulation, index))
            for index, p in enumerate(self.params)
        ]

    def attach(self) -> None:
        """Copy current gradients into the views and make each ``.grad`` its view."""
        with torch.no_grad():
            for p, view in zip(self.params, self.views, strict=True):
                if p.grad is not view:
                    if p.grad is None:
                        view.zero_()
                    else:
                        view.copy_(p.grad)
                    p.grad = view
        for p, view in zip(self.params, self.views, strict=True):
            _OWNER_OF_VIEW[id(view)] = self
            _OWNER_OF_PARAM[id(p)] = self
        _OWNER_OF_BUFFER[id(self.buffer)] = self

    def remove(self) -> None:
        """Stop managing these gradients: they stay (plain) tensors, the fast path ends."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for p, view in zip(self.params, self.views, strict=True):
            if _OWNER_OF_VIEW.get(id(view)) is self:
                del _OWNER_OF_VIEW[id(view)]
            if _OWNER_OF_PARAM.get(id(p)) is self:
                del _OWNER_OF_PARAM[id(p)]
        _OWNER_OF_BUFFER.pop(id(self.buffer), None)

    def _reattach_before_accumulation(self, index: int, grad: Tensor) -> None:
        # Runs before AccumulateGrad: a view put back now is accumulated into in place.
        # One attribute check per tensor; the re-attaching happens once per zero_grad.
        if self.params[index].grad is not None:
            return
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        with torch.no_grad():
            if len(missing) == len(self.params):
                self.buffer.zero_()
            else:
                torch._foreach_zero_([self.views[i] for i in missing])
            for i in missing:
                self.params[i].grad = self.views[i]


def flatten_grads_(
    model_or_params: nn.Module | ParamsLike, *, exact_norm: bool = True
) -> list[FlatGradBuffer]:
    """Make every parameter's ``.grad`` a view into one contiguous buffer per (device, dtype).

    Scaling and clamping then run once per buffer. Norms: with ``exact_norm=True`` (the
    default) they are still taken per gradient, so ``clip_grad_norm_`` stays bit-identical
    to torch (given the parameters in the order they were flattened); ``exact_norm=False``
    takes one reduction per buffer instead -- the fastest, equal to torch up to float
    rounding (relative 1e-6 in float32; the ``inf`` norm stays exact).

    Accepts a module or anything the clipping ops accept as parameters. Parameters that do
    not require a gradient, empty, sparse or sharded (DTensor) ones, and duplicates, are
    left out. Current gradients are copied into
    the buffer; missing ones become zeros. Calling it again re-flattens: the old buffers of
    these parameters stop being used.

    Args:
        model_or_params: a module, or parameters as the clipping ops accept them.
        exact_norm: take norms per gradient (torch's bits) rather than one per buffer.

    Returns:
        The buffers, in (device, dtype) order of first appearance.

    Raises:
        TypeError: ``model_or_params`` is neither a module nor parameters.
    """
    if isinstance(model_or_params, nn.Module):
        model_or_params = model_or_params.parameters()
    params = _unique_trainable([t for _, t in named_tensors(model_or_params)])
    for old in {id(o): o for p in params if (o := _OWNER_OF_PARAM.get(id(p)))}.values():
        old.remove()
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    buffers = [FlatGradBuffer(group, exact_norm) for group in groups.values()]
    for flat in buffers:
        flat.attach()
    return buffers


def _unique_trainable(params: Iterable[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    unique = []
    for p in params:
        plain = type(p.data) is Tensor and not p.is_sparse and p.numel() > 0
        if p.requires_grad and plain and id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return unique


def reiterable(parameters: ParamsLike) -> ParamsLike:
    """``parameters`` in a form that can be iterated twice (a one-shot iterator as a list).

    An empty generator is returned as is, so that the caller's "empty generator" warning
    still fires.
    """
    if not isinstance(parameters, Iterator):
        return parameters
    items = list(parameters)
    if not items and isinstance(parameters, types.GeneratorType):
        return (item for item in items)
    return items


def is_flat(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a registered view or a flat buffer (then the flat paths decide).

    A call whose first gradient is neither takes no flat path (every one of them looks at the
    first tensor first), so the plain path gives the same answer.
    """
    return bool(_OWNER_OF_VIEW) and (id(tensor) in _OWNER_OF_VIEW or id(tensor) in _OWNER_OF_BUFFER)


def plain_or_flat_grads(parameters: ParamsLike) -> tuple[list[Tensor] | None, list[Tensor] | None]:
    """A plain parameter list's gradients, or the flat buffers they cover, each ``.grad`` read once.

    Args:
        parameters: what the caller passed, iterable twice (``reiterable``).

    Returns:
        ``(grads, None)``: the gradients of a plain list
        (``gradclip.parameters.plain_parameter_grads``), all ordinary tensors, none a
        flat view; ``(None, buffers)``: the flat buffers those gradients
        cover exactly; ``(None, None)``: anything else (named pairs, DTensors, views covering
        part of a buffer), for the general path.
    """
    grads = plain_parameter_grads(parameters)
    if grads is None:
        return None, None
    if grads and is_flat(grads[0]):  # views are checked one by one: no type check needed
        return None, covering_buffers(grads)
    return (grads, None) if PLAIN_GRAD_TYPES.issuperset(map(type, grads)) else (None, None)


def covering_buffers(tensors: Sequence[Tensor]) -> list[Tensor] | None:
    """The flat buffers that ``tensors`` (gradients) cover exactly, or ``None``.

    Exactly: every tensor is a registered view at its registered address, none twice, and
    the views of every buffer touched are all there. Then the buffers hold the same numbers
    as ``tensors`` and an op on them is an op on ``tensors``.
    """
    if not _OWNER_OF_VIEW or not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    owner = _OWNER_OF_VIEW.get(id(tensors[0]))
    if owner is None:
        return None
    ids = tuple(map(id, tensors))
    return _buffers_if_covered(owner, ids, tensors)


def _buffers_if_covered(
    owner: FlatGradBuffer, ids: tuple[int, ...], tensors: Sequence[Tensor]
) -> list[Tensor] | None:
    if ids == owner.view_ids:  # one buffer, in registration order: the common case
        if tuple(map(_data_ptr_of, tensors)) != owner.view_addresses:
            return None
        return [owner.buffer]
    owners = _owners_covering(ids)
    if owners is None or not all(_at_registered_address(t) for t in tensors):
        return None
    return [o.buffer for o in owners]


def _owners_covering(ids: tuple[int, ...]) -> list[FlatGradBuffer] | None:
    owners: dict[int, FlatGradBuffer] = {}
    for view_id in ids:
        owner = _OWNER_OF_VIEW.get(view_id)
        if owner is None:
            return None
        owners[id(owner)] = owner
    if len(set(ids)) != len(ids) or len(ids) != sum(len(o.views) for o in owners.values()):
        return None
    return list(owners.values())


def _at_registered_address(view: Tensor) -> bool:
    return view.data_ptr() == _OWNER_OF_VIEW[id(view)].address_of_view[id(view)]


def grad_buffers(parameters: ParamsLike) -> list[Tensor] | None:
    """The flat buffers holding exactly the gradients of ``parameters``, or ``None``.

    ``parameters`` is a list or tuple (see ``reiterable``), else ``None``; parameters
    without a gradient are ignored, as every op ignores them.
    """
    if not _OWNER_OF_VIEW or not isinstance(parameters, (list, tuple)) or not parameters:
        return None
    items = parameters
    if isinstance(items[0], tuple):
        try:
            items = [tensor for _, tensor in items]
        except (TypeError, ValueError):
            return None
    try:
        grads = list(map(_grad_of, items))
    except AttributeError:
        return None
    first = next((g for g in grads if g is not None), None)
    owner = _OWNER_OF_VIEW.get(id(first))
    if owner is None:
        return None
    if len(grads) == len(owner.views):  # skip the filtering below
        ids = tuple(map(id, grads))
        if ids == owner.view_ids:
            return _buffers_if_covered(owner, ids, grads)
    return covering_buffers([g for g in grads if g is not None])


def norm_operands(tensors: object) -> list[Tensor] | None:
    """The tensors whose per-tensor norms make up the total norm of ``tensors``, or ``None``.

    ``None`` (take the norms of ``tensors`` as they are) unless flat buffers are involved:
    views that cover whole fast buffers are replaced by their buffers (one reduction each);
    buffers passed themselves stay whole if fast, and expand to their views if exact.
    """
    if not _OWNER_OF_VIEW or not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    owner = _OWNER_OF_BUFFER.get(id(tensors[0]))
    if owner is not None:
        return _expand_exact_buffers(tensors)
    buffers = covering_buffers(tensors)
    if buffers is None or any(_OWNER_OF_BUFFER[id(b)].exact_norm for b in buffers):
        return None
    return buffers


def _expand_exact_buffers(tensors: Sequence[Tensor]) -> list[Tensor]:
    operands: list[Tensor] = []
    for tensor in tensors:
        owner = _OWNER_OF_BUFFER.get(id(tensor))
        if owner is not None and owner.buffer is tensor and owner.exact_norm:
            operands.extend(owner.views)
        else:
            operands.append(tensor)
    return operands


def whole_flat_buffers(tensors: Sequence[Tensor]) -> list[Tensor] | None:
    """``tensors`` as whole flat buffers -- views covering them, or the buffers -- or ``None``."""
    if not _OWNER_OF_VIEW or not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    if all(_OWNER_OF_BUFFER.get(id(t)) is not None for t in tensors):
        return list(tensors)
    return covering_buffers(tensors)
