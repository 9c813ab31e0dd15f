"""Clipping by norm fused into the optimizer step: the clip costs one read pass.

Clip-then-step reads every gradient for the norm, reads and writes it again to scale it,
then the optimizer reads it a third time. torch's fused optimizers (``Adam``, ``AdamW``,
``SGD`` with ``fused=True``, on CPU and CUDA) take a ``grad_scale`` and a ``found_inf``
tensor -- the hooks ``torch.amp.GradScaler`` uses -- and apply them inside the step kernel:

    g <- g / grad_scale                    (the CPU kernels write this g back to .grad)
    skip the whole step where found_inf    (on the device: no host sync; step counts kept)

So clipping by norm becomes ``grad_scale = max((||g|| + 1e-6) / max_norm, 1)``, the
reciprocal of torch's clip coefficient, and the ``"skip"`` policy becomes
``found_inf = ~isfinite(||g||)``. An AMP scale already set on the optimizer is combined
with it, not replaced. The result equals clip-then-step up to float rounding (``g / s``
versus ``g * (1 / s)``, one ulp), and on CPU (tested) ``.grad`` holds the clipped gradient
afterwards, as it would after clipping. Differences: under ``"skip"`` the gradients are
left as they were, not zeroed (the step is skipped either way).

Other optimizers, other strategies than ``NormClip``, parameter groups with their own clip
options and the ``"error"`` policy take the ordinary clip-then-step path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gradclip._kernels import CLIP_EPS
from gradclip.functional import get_total_norm
from gradclip.nonfinite import skipped_flag
from gradclip.stats import ClipStats
from gradclip.strategies.base import Clipper
from gradclip.strategies.norm import NormClip

CLIP_OPTIONS = ("max_norm", "norm_type", "clip_value", "clipping")


def supports_fused_clip(optimizer: torch.optim.Optimizer) -> bool:
    """True if every param group of ``optimizer`` steps with a fused kernel taking ``grad_scale``.

    Args:
        optimizer: any torch optimizer.

    Returns:
        Whether it is fused (``fused=True``) with AMP-scaling support, and no group carries
        clip options of its own.
    """
    groups = optimizer.param_groups
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        group.get("fused") and not any(option in group for option in CLIP_OPTIONS)
        for group in groups
    )


def can_fuse(optimizer: torch.optim.Optimizer, clipper: Clipper) -> bool:
    """True if ``clipper.clip_`` then ``optimizer.step()`` can run as one fused step.

    Args:
        optimizer: any torch optimizer.
        clipper: any clipper.

    Returns:
        Whether ``clipper`` is a local ``NormClip`` outside the ``"error"`` policy and
        ``optimizer`` supports the fused clip.
    """
    return (
        type(clipper) is NormClip
        and clipper.process_group is None  # the fused norm is this rank's alone
        and clipper.nonfinite != "error"
        and supports_fused_clip(optimizer)
    )


def step_with_grad_scale(
    optimizer: torch.optim.Optimizer, grad_scale: Tensor, skip: Tensor | None = None
) -> None:
    """``optimizer.step()`` with every gradient divided by ``grad_scale`` in the fused kernel.

    ``skip`` (0-dim bool) skips the step on the device. An AMP ``grad_scale``/``found_inf``
    already on the optimizer (set by ``GradScaler.step``) is combined with these.

    Args:
        optimizer: a fused optimizer (``supports_fused_clip``).
        grad_scale: the 0-dim divisor of every gradient.
        skip: a 0-dim bool tensor that skips the step where true, or ``None``.
    """
    amp_scale = getattr(optimizer, "grad_scale", None)
    amp_found_inf = getattr(optimizer, "found_inf", None)
    scale = grad_scale.float() if amp_scale is None else amp_scale * grad_scale.float()
    found_inf = None if skip is None else skip.float()
    if amp_found_inf is not None:
        found_inf = amp_found_inf if found_inf is None else torch.maximum(amp_found_inf, found_inf)
    # the attributes torch's GradScaler sets on a fused optimizer (not declared by Optimizer)
    setattr(optimizer, "grad_scale", scale)  # noqa: B010
    setattr(optimizer, "found_inf", found_inf)  # noqa: B010
    try:
        optimizer.step()
    finally:
        _restore(optimizer, "grad_scale", amp_scale)
        _restore(optimizer, "found_inf", amp_found_inf)


def _restore(optimizer: torch.optim.Optimizer, name: str, value: Tensor | None) -> None:
    if value is None:
        delattr(optimizer, name)
    else:
        setattr(optimizer, name, value)


def norm_clip_grad_scale(
    grads: list[Tensor | None], max_norm: float | Tensor, norm_type: float = 2.0
) -> tuple[Tensor, Tensor]:
    """The total norm of ``grads`` and the ``grad_scale`` that clips them to ``max_norm``.

    ``grad_scale = max((||g||_p + 1e-6) / max_norm, 1)``: the fused kernel divides by it,
    so it is the reciprocal of torch's ``min(max_norm / (||g||_p + 1e-6), 1)``. The only
    pass over the gradients is the norm (one reduction per flat buffer).

    Args:
        grads: the gradients (``None`` entries are ignored).
        max_norm: the threshold.
        norm_type: p, any number or ``inf`` (torch's meaning).

    Returns:
        ``(total_norm, grad_scale)``, both 0-dim tensors.
    """
    total_norm = get_total_norm([g for g in grads if g is not None], norm_type)
    return total_norm, torch.clamp((total_norm + CLIP_EPS) / max_norm, min=1.0)


def fused_clip_step(
    optimizer: torch.optim.Optimizer,
    clipper: NormClip,
    closure: Callable[[], object] | None = None,
) -> ClipStats:
    """Clip the gradients of ``optimizer``'s parameters by ``clipper`` inside its fused step.

    Same effect as ``clipper.clip_(params); optimizer.step()`` (see the module docstring);
    call only where ``can_fuse`` holds (so the policy is never ``"error"``).

    Args:
        optimizer: a fused optimizer.
        clipper: the ``NormClip`` whose threshold and policy apply.
        closure: run first with grad enabled, as ``optimizer.step(closure)`` would.

    Returns:
        The ``ClipStats`` that ``clip_`` would return.
    """
    if closure is not None:
        with torch.enable_grad():
            closure()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    total_norm, grad_scale = norm_clip_grad_scale(grads, clipper.max_norm, clipper.norm_type)
    skipped = skipped_flag(clipper.nonfinite, total_norm)
    step_with_grad_scale(optimizer, grad_scale, skipped if clipper.nonfinite == "skip" else None)
    threshold = torch.full((), clipper.max_norm, device=total_norm.device)
    return ClipStats(total_norm, threshold, grad_scale > 1, skipped)
