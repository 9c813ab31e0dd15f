"""Row-sparse tensors in a checkpoint: only the rows that hold a bit, restored bit for bit.

The text model's wide path has a weight row per hashed feature (2**20 of them) and AdamW
keeps two moments of the same shape, but a training split reaches only a fraction of the
features: every other row is exactly zero in all three (no gradient ever touched it, and its
group has no weight decay). ``compact`` stores such a tensor as its non-zero rows::

    {ROWS_MARK: 1, "rows": int32 row indices (sorted), "values": those rows, "shape": [...]}

``expand`` puts the dense tensor back: zeros, then the stored rows copied in, so every bit
(``-0.0`` included) is what was saved. A tensor is compacted when it has at least
``MIN_ELEMENTS`` elements and at most half its rows hold a non-zero bit. Everything else is
left as it is. The stored form is plain tensors and plain types (``weights_only`` loads it),
and ``expand`` checks it before use: a hand-made entry fails as one ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

ROWS_MARK = "gradclip.sparse_rows"
MIN_ELEMENTS = 2**16
MAX_ELEMENTS = 2**31


def nonzero_rows(tensor: Tensor) -> Tensor:
    """Indices of the rows (along dim 0) with any bit set: ``-0.0`` counts, ``+0.0`` does not."""
    bits = tensor.detach().reshape(tensor.shape[0], -1)
    if bits.dtype.is_floating_point:
        bits = bits.view(_same_width_integer(bits.dtype))
    return (bits != 0).any(dim=1).nonzero().flatten()


def _same_width_integer(dtype: torch.dtype) -> torch.dtype:
    return {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[dtype.itemsize]


def compact(value: Any) -> Any:
    """``value`` (a checkpoint state, nested dicts and lists) with sparse-row tensors compacted."""
    if isinstance(value, dict):
        return {key: compact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(compact(item) for item in value)
    if not isinstance(value, Tensor) or value.dim() == 0 or value.numel() < MIN_ELEMENTS \
            or value.layout != torch.strided or value.is_complex() or value.dtype == torch.bool:
        return value
    rows = nonzero_rows(value)
    if 2 * rows.numel() > value.shape[0] or value.shape[0] >= 2**31:
        return value
    return {ROWS_MARK: 1, "rows": rows.to(torch.int32), "values": value.detach()[rows].clone(),
            "shape": list(value.shape)}


def expand(value: Any) -> Any:
    """The inverse of ``compact``: every stored sparse-row entry back as its dense tensor.

    Raises:
        ValueError: a sparse-row entry whose rows, values or shape do not fit together.
    """
    if isinstance(value, dict):
        if ROWS_MARK in value:
            return dense(value)
        return {key: expand(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(expand(item) for item in value)
    return value


def dense(entry: dict[str, Any]) -> Tensor:
    """One sparse-row entry as a dense tensor, after checking it."""
    rows, values, shape = entry.get("rows"), entry.get("values"), entry.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(n, int) and n >= 0
                                                      for n in shape)):
        raise ValueError(f"a sparse-row entry has a bad shape: {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:  # a crafted shape must not allocate the machine away
        raise ValueError(f"a sparse-row entry's shape {shape} holds more than {MAX_ELEMENTS:,} "
                         "elements")
    if not (isinstance(rows, Tensor) and rows.dtype == torch.int32 and rows.dim() == 1):
        raise ValueError("a sparse-row entry's rows must be a 1-d int32 tensor")
    if not (isinstance(values, Tensor) and list(values.shape) == [rows.numel(), *shape[1:]]):
        raise ValueError(f"a sparse-row entry's values must have shape "
                         f"[{rows.numel()}, {', '.join(map(str, shape[1:]))}]")
    indices = rows.long()
    if indices.numel() and (indices.min() < 0 or indices.max() >= shape[0]
                            or (indices[1:] <= indices[:-1]).any()):
        raise ValueError(f"a sparse-row entry's rows must be increasing and below {shape[0]}")
    tensor = torch.zeros(shape, dtype=values.dtype)
    tensor[indices] = values
    return tensor
