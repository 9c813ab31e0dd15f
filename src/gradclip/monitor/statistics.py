"""Gradient statistics kept on the device: per-parameter and per-module norms, update ratios.

Everything here returns tensors and never synchronises with the host, so the monitor can
call it on every training step; the report converts to Python only when it is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradclip._kernels import per_tensor_norms


def module_path(parameter_name: str) -> str:
    """The module that owns a parameter: ``"layers.0.rnn.weight_hh_l0"`` -> ``"layers.0.rnn"``.

    A parameter registered on the root module belongs to ``"(root)"``.
    """
    owner, _, _ = parameter_name.rpartition(".")
    return owner or "(root)"


def parameter_grad_norms(parameters: Sequence[Tensor], device: torch.device) -> Tensor:
    """``(P,)`` float32 L2 norms of the parameters' gradients, 0 where a gradient is missing.

    One ``torch._foreach_norm`` per (device, dtype) group, stacked on ``device``.
    """
    present = [p.grad for p in parameters if p.grad is not None]
    norms = iter(per_tensor_norms(present, 2.0, None, input_order=True))
    zero = torch.zeros((), device=device)
    return torch.stack([
        next(norms).to(device=device, dtype=torch.float32) if p.grad is not None else zero
        for p in parameters
    ])


def combined_norm(norms: Tensor) -> Tensor:
    """The L2 norm of all tensors viewed as one vector, from their norms: ``||(n_1..n_k)||_2``."""
    total: Tensor = torch.linalg.vector_norm(norms)
    return total


def module_norms(parameter_norms: Tensor, module_index: Tensor, module_count: int) -> Tensor:
    """``(M,)`` norm of each module's gradient: ``sqrt(sum of its parameters' squared norms)``.

    ``module_index[i]`` is the position of parameter ``i``'s module; NaN/Inf propagate.
    """
    squares = parameter_norms.new_zeros(module_count)
    return squares.index_add_(0, module_index, parameter_norms.square()).sqrt()


def snapshot_weights_(buffer: list[Tensor] | None, parameters: Sequence[Tensor]) -> list[Tensor]:
    """Copy the weights into ``buffer`` (allocated on the first call), to measure the next
    optimizer update against; returns the buffer.

    One ``torch._foreach_copy_`` into memory allocated once: a fresh ``clone()`` per step
    also pays the allocator (for large weights, new pages from the system on every step).
    """
    weights = [p.detach() for p in parameters]
    if buffer is None or len(buffer) != len(weights):
        buffer = [torch.empty_like(w) for w in weights]
    torch._foreach_copy_(buffer, weights)
    return buffer


def update_ratios_(parameters: Sequence[Tensor], snapshot: list[Tensor],
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """Update-to-weight ratios ``||W_now - W_then|| / ||W_then||``, per parameter and overall.

    ``snapshot`` holds ``W_then``; it is overwritten with ``W_then - W_now`` (the norm is
    the same), so no second copy of the weights is allocated.

    Returns ``((P,) ratios, 0-dim overall ratio)``. A zero weight norm gives ``inf`` for a
    non-zero update and ``nan`` for none (0/0); both read as "no scale to compare with".

    References:
        Karpathy (2016), CS231n notes "Neural Networks Part 3": a healthy ratio is ~1e-3.
    """
    weight_norms = torch.stack([n.to(device, torch.float32)
                                for n in torch._foreach_norm(snapshot)])
    torch._foreach_sub_(snapshot, [p.detach() for p in parameters])
    update_norms = torch.stack([n.to(device, torch.float32)
                                for n in torch._foreach_norm(snapshot)])
    overall = combined_norm(update_norms) / combined_norm(weight_norms)
    return update_norms / weight_norms, overall
