"""The loggers a run's steps go to: ``metrics.jsonl``, the progress bar and TensorBoard.

Each is a :class:`StepLogger` that the :class:`~gradclip.app.training.trainer.Trainer`
calls where the reader sees it: ``start`` before the first step (the checkpointed step on
resume), ``log_step`` after every optimizer step with its metrics record, ``flush`` before
every checkpoint, and ``close`` at the end. Only the writer rank gets loggers.

TensorBoard (``--tensorboard``, optional ``tensorboard`` package): each step adds the scalars
``train/loss``, ``grad/norm_before_clip``, ``grad/threshold``, ``grad/clipped`` and
``train/lr``; every ``--log-every`` steps, the per-layer gradient norms (``grad_norm/<module>``)
and histograms of each parameter's gradient and weights, into ``<run dir>/tensorboard``
(view them with ``tensorboard --logdir <run dir>/tensorboard``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

from gradclip.app.errors import UserError
from gradclip.app.training.rundir import METRICS, json_safe, os_error, truncate_after

TENSORBOARD_DIR = "tensorboard"


class StepLogger:
    """Receives every optimizer step of a run; the defaults do nothing."""

    def start(self, step: int, total: int) -> None:
        """Called once before training, with the steps already done and the total."""

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        """One step's metrics record (``health``: the monitor's report on reporting steps)."""

    def flush(self) -> None:
        """Make what was logged durable (called before every checkpoint)."""

    def close(self) -> None:
        """The run ended (or failed): release files and terminals."""


class MetricsLogger(StepLogger):
    """Appends one JSON line per optimizer step to ``metrics.jsonl``.

    On resume, records after the checkpointed step are dropped first, so that the log
    matches the weights; unreadable lines or missing steps are reported in one line on stderr.
    The log is flushed and ``fsync``-ed before every checkpoint.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS
        self.handle: Any = None

    def start(self, step: int, total: int) -> None:
        warning = truncate_after(self.path, step).warning(self.path, step)
        if warning:
            print(warning, file=sys.stderr)
        try:
            self.handle = open(self.path, "a")  # noqa: SIM115 (kept open for the whole run)
        except OSError as error:
            raise os_error(self.path, error) from None

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        try:
            self.handle.write(json.dumps(json_safe(record)) + "\n")
        except OSError as error:
            raise os_error(self.path, error) from None

    def flush(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as error:
            raise os_error(self.path, error) from None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


# The headline metric of each task's scores, in the order looked for.
VALIDATION_METRICS = ("mean_roc_auc", "accuracy", "bits_per_char", "mse", "loss")


def validation_score(scores: dict[str, Any]) -> str | None:
    """``name=value`` of the headline metric in a task's validation scores."""
    for name in VALIDATION_METRICS:
        value = scores.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{name}={value:.4g}"
    return None


class ProgressLogger(StepLogger):
    """A tqdm bar over optimizer steps, with the latest loss and gradient norm."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, step: int, total: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            raise ImportError("progress bars need tqdm: pip install 'gradclip[app]'") from None
        self.bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        self.bar.update(1)
        if record.get("eval"):  # --eval-every: the latest validation score stays on the line
            self.validation = validation_score(record["eval"])
        extra = {"val": self.validation} if getattr(self, "validation", None) else {}
        self.bar.set_postfix(loss=f"{record['loss']:.4g}", grad_norm=f"{record['grad_norm']:.3g}",
                             **extra, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardLogger(StepLogger):
    """Scalars every step; per-layer norms and histograms at the ``--log-every`` steps."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install 'gradclip[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        step = record["step"]
        scalars = {"train/loss": record.get("loss"),
                   "grad/norm_before_clip": record.get("grad_norm"),
                   "grad/threshold": record.get("threshold"),
                   "grad/clipped": record.get("clipped"), "train/lr": record.get("lr")}
        for tag, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)
        layers = record.get("layer_grad_norms")
        if not layers:
            return
        for name, norm in layers.items():
            self.writer.add_scalar(f"grad_norm/{name}", norm, step)
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weight/{name}", parameter.detach(), step)
            if parameter.grad is not None and bool(parameter.grad.isfinite().all()):
                self.writer.add_histogram(f"grad/{name}", parameter.grad.detach(), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def run_loggers(run_dir: Path, *, progress: bool | None, tensorboard: bool = False
                ) -> list[StepLogger]:
    """The writer's loggers: metrics always, the bar on a terminal (``progress=None``: auto)."""
    loggers: list[StepLogger] = [MetricsLogger(run_dir)]
    if sys.stdout.isatty() if progress is None else progress:
        loggers.append(ProgressLogger())
    if tensorboard:
        loggers.append(TensorBoardLogger(run_dir))
    return loggers
