"""TensorBoard logging for ``gradclip train --tensorboard`` (optional ``tensorboard`` package).

Each optimizer step adds the scalars ``train/loss``, ``grad/norm_before_clip``,
``grad/threshold``, ``grad/clipped`` and ``train/lr``; every ``--log-every`` steps, the
per-layer gradient norms (``grad_norm/<module>``) and histograms of each parameter's gradient
and weights. Events go to ``<run dir>/tensorboard``; view them with
``tensorboard --logdir <run dir>/tensorboard``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError

TENSORBOARD_DIR = "tensorboard"


def summary_writer(run_dir: Path) -> Any:
    """A ``SummaryWriter`` on ``run_dir/tensorboard``; a clear error without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: "
                        "pip install 'gradclip[tensorboard]'") from None
    return SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))


def log_step(writer: Any, record: dict[str, Any], model: Any) -> None:
    """Write one metrics record (and, at logging steps, histograms of ``model``)."""
    step = record["step"]
    scalars = {"train/loss": record.get("loss"), "grad/norm_before_clip": record.get("grad_norm"),
               "grad/threshold": record.get("threshold"), "grad/clipped": record.get("clipped"),
               "train/lr": record.get("lr")}
    for tag, value in scalars.items():
        if value is not None and math.isfinite(float(value)):
            writer.add_scalar(tag, float(value), step)
    layers = record.get("layer_grad_norms")
    if not layers:
        return
    for name, norm in layers.items():
        writer.add_scalar(f"grad_norm/{name}", norm, step)
    for name, parameter in model.named_parameters():
        writer.add_histogram(f"weight/{name}", parameter.detach(), step)
        if parameter.grad is not None and bool(parameter.grad.isfinite().all()):
            writer.add_histogram(f"grad/{name}", parameter.grad.detach(), step)


def attach_tensorboard(trainer: Any, run_dir: Path) -> Any:
    """Log every step of ``trainer`` to TensorBoard; returns the writer (close it at the end).

    Wraps the trainer's ``train_one_step`` on this instance only: the step runs unchanged,
    then its metrics record (and the gradients still held after the step) are written.
    """
    writer = summary_writer(run_dir)
    one_step = trainer.train_one_step

    def train_one_step_and_log() -> dict[str, Any]:
        record = one_step()
        log_step(writer, record, trainer.model)
        return record

    trainer.train_one_step = train_one_step_and_log
    return writer
