"""What every op accepts as ``parameters``: tensors, one tensor, or ``named_parameters()`` pairs.

All ops normalise their input here once, so that an error can name the parameter by its
module path (``"2.weight"``) when the caller passed ``model.named_parameters()``, and by its
position (``"parameters[3]"``) otherwise.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from operator import attrgetter
from typing import TypeAlias

from torch import Tensor
from torch.nn import Parameter

NamedTensor: TypeAlias = tuple[str, Tensor]
ParamsLike: TypeAlias = Tensor | Iterable[Tensor] | Iterable[NamedTensor]


def named_tensors(parameters: ParamsLike, argument: str = "parameters") -> list[NamedTensor]:
    """Return ``parameters`` as a list of ``(name, tensor)`` pairs.

    Accepts a single tensor, any iterable (generators included) of tensors, or of
    ``(name, tensor)`` pairs as ``Module.named_parameters()`` yields. Anything else is a
    ``TypeError`` that says which item was wrong and what it was.
    """
    if isinstance(parameters, Tensor):
        return [(argument, parameters)]
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{argument} must be a tensor, an iterable of tensors or of (name, tensor) pairs, "
            f"got {type(parameters).__name__}"
        )
    is_generator = isinstance(parameters, types.GeneratorType)
    items = list(parameters)
    if is_generator and not items:
        # torch.nn.utils warns here too: an exhausted generator is a common silent mistake.
        warnings.warn(
            f"`{argument}` is an empty generator, no gradient clipping will occur.",
            stacklevel=3,
        )
    return [_named_item(item, index, argument) for index, item in enumerate(items)]


def _named_item(item: object, index: int, argument: str) -> NamedTensor:
    if isinstance(item, Tensor):
        return (f"{argument}[{index}]", item)
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], Tensor)
    ):
        return item
    raise TypeError(
        f"{argument}[{index}] is a {type(item).__name__}; expected a torch.Tensor "
        "or a (name, tensor) pair as Module.named_parameters() yields"
    )


def named_grads(parameters: ParamsLike, *, checked: bool = False) -> list[NamedTensor]:
    """The ``(name, grad)`` pairs of the parameters that have a gradient.

    Args:
        parameters: anything ``named_tensors`` accepts.
        checked: ``parameters`` is already a list of ``(name, tensor)`` pairs made by
            ``named_tensors`` (a strategy's parameter groups): not checked again, which
            saves a Python pass over every parameter on each clip.

    Returns:
        The pairs, in order; parameters without a gradient are left out.

    Raises:
        TypeError: an item that is neither a tensor nor a ``(name, tensor)`` pair.
    """
    named = parameters if checked else named_tensors(parameters)
    return [(name, p.grad) for name, p in named if p.grad is not None]


# The types of a plain parameter list: no named pairs, no tensor subclasses (DTensor).
PLAIN_PARAMETER_TYPES = frozenset({Tensor, Parameter})
PLAIN_GRAD_TYPES = frozenset({Tensor})
_grad_of = attrgetter("grad")


def plain_tensors(tensors: ParamsLike) -> list[Tensor] | tuple[Tensor, ...] | None:
    """``tensors`` if it is a list or tuple of ordinary tensors, else ``None``.

    Ordinary: of type ``Tensor`` itself, the type torch's foreach kernels take without a
    per-tensor fallback (no ``Parameter``, no DTensor, no named pairs). One look-up of the
    set of types present, not one check per tensor.
    """
    if type(tensors) is not list and type(tensors) is not tuple:
        return None
    return tensors if PLAIN_GRAD_TYPES.issuperset(map(type, tensors)) else None


def plain_parameter_grads(parameters: ParamsLike) -> list[Tensor] | None:
    """The gradients of a plain parameter list, or ``None`` where the general path is needed.

    Plain: a list or tuple (a generator made into one by ``gradclip.flat.reiterable``)
    of ordinary tensors or ``Parameter`` objects: no named pairs, no DTensors, nothing to
    name in an error. The types are looked up once per call (the set of the types present),
    not once per tensor, and no name strings are made: the drop-in ops then cost what
    torch's cost. The gradients' own types are the caller's to check
    (``gradclip.flat.plain_or_flat_grads``: flat views are checked one by one anyway).

    Args:
        parameters: what the caller passed, iterable twice.

    Returns:
        The gradients of the parameters that have one, in order; ``None`` when
        ``parameters`` is anything else (then ``named_grads`` serves).
    """
    if type(parameters) is not list and type(parameters) is not tuple:
        return None
    if not PLAIN_PARAMETER_TYPES.issuperset(map(type, parameters)):
        return None
    return [g for g in map(_grad_of, parameters) if g is not None]


def check_positive_number(value: object, name: str, allow_zero: bool = False) -> float:
    """``float(value)`` if it is a finite number > 0 (or >= 0), else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    bound_ok = number >= 0 if allow_zero else number > 0
    if not bound_ok or number != number or number == float("inf"):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")
    return number


# The smallest threshold a clipping strategy accepts: the smallest normal float32, 2**-126
# (about 1.2e-38). A smaller one is subnormal or zero in float32, the dtype the clip factor is
# computed in, so every gradient would be scaled to (nearly) zero without a word.
MIN_THRESHOLD = 2.0**-126


def check_threshold(value: object, name: str) -> float:
    """``float(value)`` if it is a finite number of at least ``MIN_THRESHOLD``.

    Args:
        value: a clipping threshold (``max_norm``, ``max_grad_norm``, AGC's ``clipping``).
        name: the argument's name, for the error message.

    Returns:
        The threshold as a float.

    Raises:
        TypeError: not a number.
        ValueError: not positive and finite, or below ``MIN_THRESHOLD``.
    """
    number = check_positive_number(value, name)
    if number < MIN_THRESHOLD:
        raise ValueError(f"{name} must be at least {MIN_THRESHOLD:.3g} (the smallest normal "
                         "float32: a smaller threshold is zero or subnormal in float32 and "
                         f"would zero every gradient), got {value!r}")
    return number


def check_norm_type(norm_type: object) -> float:
    """``norm_type`` read as torch reads it: ``float(norm_type)``.

    Any p is accepted, with ``torch.linalg.vector_norm``'s meaning: p > 0 and ``inf`` as
    usual, 0 counts non-zeros, a negative p or ``-inf`` is the harmonic-like norm
    ``(sum |x|^p)^(1/p)`` (``min |x|`` for ``-inf``); numeric strings such as ``"inf"`` too.

    Args:
        norm_type: what the caller passed as ``norm_type``.

    Returns:
        p as a float.

    Raises:
        TypeError: not a number or a string (torch's ``float()`` fails the same way).
        ValueError: a string that is not a number.
    """
    if isinstance(norm_type, str):
        try:
            return float(norm_type)
        except ValueError:
            raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    try:
        # any object: float() raises the TypeError torch's own float() call would
        return float(norm_type)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(
            f"norm_type must be a number or 'inf', got {type(norm_type).__name__}"
        ) from None
