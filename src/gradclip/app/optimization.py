"""Optimizer, learning-rate schedule, device and mixed precision of a run, from its settings."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from gradclip.app.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmdown")
# warmdown: constant, then linear decay to 0 over the last WARMDOWN_FRACTION of the steps.
WARMDOWN_FRACTION = 0.2
AMP_MODES = ("none", "fp16", "bf16")


def build_optimizer(name: str, parameters: Iterable[nn.Parameter], lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with ``momentum``), Adam or AdamW, all with ``weight_decay``."""
    parameters = list(parameters)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """``constant`` learning rate, ``cosine`` decay to 0 over ``total_steps``, or ``warmdown``:
    constant, then linear decay to 0 over the last 20% of the steps (a run keeps the full
    learning rate, where instability shows, and still settles at the end)."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0))))
    if schedule == "warmdown":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmdown(step, total_steps))
    raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


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


def grad_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 on CUDA; ``None`` otherwise (bf16 needs no loss scaling)."""
    return torch.amp.GradScaler(device.type) if mode == "fp16" else None


def warmdown(step: int, total_steps: int) -> float:
    """Learning-rate factor: 1 until the last ``WARMDOWN_FRACTION`` of the steps, then to 0."""
    decay_steps = max(1, round(total_steps * WARMDOWN_FRACTION))
    return min(1.0, max(0.0, (total_steps - step) / decay_steps))
