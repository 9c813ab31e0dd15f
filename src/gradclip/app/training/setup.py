"""What a run is built from besides its model: optimizer, schedule, clipper, device, AMP."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

import gradclip
from gradclip.app.choices import AMP_MODES, FLOAT32_MAX, OPTIMIZERS, SCHEDULES
from gradclip.app.config import TrainConfig
from gradclip.app.errors import UserError
from gradclip.strategies.base import Clipper

# warmdown: constant, then linear decay to 0 over the last WARMDOWN_FRACTION of the steps.
WARMDOWN_FRACTION = 0.2


def build_optimizer(train: TrainConfig, parameters: Iterable[nn.Parameter]
                    ) -> torch.optim.Optimizer:
    """SGD (with ``momentum``), Adam or AdamW, all with ``weight_decay``."""
    parameters = list(parameters)
    name, lr, momentum, weight_decay = train.optimizer, train.lr, train.momentum, train.weight_decay
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, *,
                    warmup_steps: int = 0, min_lr_ratio: float = 0.0
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate over the run: ``lr`` times ``lr_factor`` at each step."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, schedule, total_steps, warmup_steps, min_lr_ratio))


def lr_factor(step: int, schedule: str, total_steps: int, warmup_steps: int = 0,
              min_lr_ratio: float = 0.0) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based).

    A linear warm-up first, ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps``
    (nanoGPT's), then the schedule over the remaining steps: ``constant`` 1; ``cosine``
    ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p`` the fraction of the steps after the
    warm-up done and ``r = min_lr_ratio`` (the floor, as a fraction of ``lr``); ``warmdown``
    1, then linear decay to ``r`` over the last 20% of the steps (a run keeps the full
    learning rate, where instability shows, and still settles at the end).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        done = min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * done))
    else:
        decay = warmdown(step, total_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable device is a ``UserError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def check_amp(mode: str, device: torch.device) -> None:
    """fp16 needs CUDA (a ``GradScaler``); bf16 works on CPU and CUDA."""
    if mode not in AMP_MODES:
        raise UserError(f"unknown --amp {mode!r}; choose one of {', '.join(AMP_MODES)}")
    if mode == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA device; on CPU use --amp bf16")


def autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of the forward pass (a no-op without AMP)."""
    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled for fp16 only (bf16 needs no loss scaling).

    A disabled scaler is the identity (``scale`` returns the loss, ``unscale_`` and ``update``
    do nothing, ``step`` calls ``optimizer.step()``), so the step has no ``if amp`` branch.
    """
    return torch.amp.GradScaler(device.type, enabled=mode == "fp16")


def warmdown(step: int, total_steps: int) -> float:
    """Learning-rate factor: 1 until the last ``WARMDOWN_FRACTION`` of the steps, then to 0."""
    decay_steps = max(1, round(total_steps * WARMDOWN_FRACTION))
    return min(1.0, max(0.0, (total_steps - step) / decay_steps))


def clipper_from_spec(spec: str, nonfinite: str = "propagate") -> Clipper:
    """``gradclip.from_spec(spec)`` under the run's one non-finite policy.

    ``--nonfinite`` becomes the clipper's ``nonfinite=`` unless the spec names its own policy
    (``norm:1.0,nonfinite=skip``); two different policies are a mistake.

    Raises:
        UserError: a bad spec (the library's first line, with examples), or two policies.
    """
    try:
        clipper = gradclip.from_spec(spec)
    except (ValueError, TypeError) as error:
        # the library's message lists every strategy over several lines; keep its first line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if repr(spec) not in reason:
            reason = f"invalid clipping spec {spec!r}: {reason}"
        raise UserError(f"{reason} (e.g. none, norm:1.0, value:0.5, agc:0.01, autoclip:0.1, "
                        "zclip, adagc, spikeskip+norm:1.0)") from None
    check_float32_range(spec, clipper)
    if nonfinite == "propagate" or clipper.nonfinite == nonfinite:
        return clipper
    if clipper.nonfinite != "propagate":
        raise UserError(f"--clip {spec} sets nonfinite={clipper.nonfinite} but --nonfinite is "
                        f"{nonfinite}; give the policy once")
    return clipper.with_nonfinite(nonfinite)


def check_float32_range(spec: str, clipper: Clipper) -> None:
    """Thresholds are compared with float32 norms: a larger one is a typo, not a setting
    (a chain's members are checked each)."""
    for member in getattr(clipper, "clippers", ()):
        check_float32_range(spec, member)
    for name, value in clipper.hyperparameters().items():
        if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise UserError(f"--clip {spec}: {name} must be within float32's range "
                            f"(|{name}| <= {FLOAT32_MAX:.4g}), got {value:g}")


def check_spec(spec: str) -> str:
    """Validate a spec up front (argparse ``type=``); returns it unchanged."""
    clipper_from_spec(spec)
    return spec
