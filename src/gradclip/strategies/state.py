"""Checks on a state dict before a strategy loads it: its kind, keys, types and shapes.

Every strategy's ``state_dict()`` carries ``"kind"``, the strategy's spec name (``"zclip"``),
so that a checkpoint written by one strategy is refused by another at load time, with one
line, instead of failing steps later (a ``KeyError``, a NaN threshold). States written
before the key existed (no ``"kind"``) are read as the loading strategy's own.

    check_state(self, state_dict, {"calls": count, "mean": tensor_of((), FLOAT)})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

KIND = "kind"

# A check returns what is wrong with a value, or None when it is fine.
Check = Callable[[Any], "str | None"]

FLOAT = "floating point"
INTEGER = "integer"
BOOL = "bool"


def check_state(
    owner: Any,
    state_dict: object,
    required: Mapping[str, Check],
    optional: Mapping[str, Check] | None = None,
) -> dict[str, Any]:
    """``state_dict`` without its ``"kind"``, once everything in it is what ``owner`` expects.

    Args:
        owner: the clipper about to load the state (its ``kind`` and class name are used).
        state_dict: the state, as a checkpoint gave it back.
        required: the keys that must be there, each with its check.
        optional: keys that may be missing, each with its check.

    Returns:
        The state's entries, ``"kind"`` left out.

    Raises:
        ValueError: a state that is not a dict, belongs to another strategy, lacks a key,
            has a key no strategy of this kind writes, or holds a value of the wrong type or
            shape; one line naming the strategy and what is wrong.
    """
    name = f"{type(owner).__name__}.load_state_dict"
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{name}: a state must be a dict, got {type(state_dict).__name__}")
    kind = state_dict.get(KIND, owner.kind)
    if kind != owner.kind:
        raise ValueError(f"{name}: this state belongs to {kind!r}, not to {owner.kind!r}")
    entries = {key: value for key, value in state_dict.items() if key != KIND}
    optional = optional or {}
    missing = sorted(set(required) - set(entries))
    unexpected = sorted(set(entries) - set(required) - set(optional), key=str)
    if missing or unexpected:
        problems = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {unexpected}"] if unexpected else [])
        raise ValueError(f"{name}: keys do not match a {owner.kind!r} state: {'; '.join(problems)}")
    checks = {**optional, **required}
    for key, value in entries.items():
        problem = checks[key](value)
        if problem is not None:
            raise ValueError(f"{name}: {key!r} {problem}")
    return entries


def count(value: object) -> str | None:
    """Check: a Python int >= 0 (a step or call counter)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be an integer >= 0, got {value!r}"
    return None


def tensor_of(shape: tuple[int | None, ...], kind: str) -> Check:
    """Check: a tensor of ``shape`` (``None`` for any length along that dim) and dtype kind.

    Args:
        shape: the expected shape; ``()`` for a scalar.
        kind: ``FLOAT``, ``INTEGER`` or ``BOOL``.

    Returns:
        The check.
    """

    def check(value: object) -> str | None:
        if not isinstance(value, Tensor):
            return f"must be a tensor, got {type(value).__name__}"
        if value.ndim != len(shape) or any(
            want is not None and size != want for size, want in zip(value.shape, shape, strict=True)
        ):
            expected = tuple("n" if want is None else want for want in shape)
            return f"must have shape {expected}, got {tuple(value.shape)}"
        if _dtype_kind(value.dtype) != kind:
            return f"must be a {kind} tensor, got {value.dtype}"
        return None

    return check


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return BOOL
    return FLOAT if dtype.is_floating_point else INTEGER
