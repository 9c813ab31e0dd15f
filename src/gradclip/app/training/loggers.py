"""The loggers a run's steps go to: ``metrics.jsonl``, the progress bar or lines, TensorBoard.

Each is a `StepLogger` that the `Trainer` (`gradclip.app.training.trainer`) calls where the
reader sees it: ``start`` before the first step (the checkpointed step on resume),
``log_step`` after every optimizer step with its metrics record, ``flush`` before every
checkpoint, and ``close`` at the end. Only the writer rank gets loggers.

Progress: on a terminal a tqdm bar; anywhere else (a log file, ``nohup``, CI, a notebook) a
plain line at least every ``PROGRESS_SECONDS`` seconds: step, total, loss and ETA.
``metrics.jsonl`` reaches the file at least every ``--log-every`` steps and every
``FLUSH_SECONDS`` seconds (and is ``fsync``-ed before every checkpoint), so ``tail -f`` shows
a run as it goes.

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from gradclip.app.errors import UserError
from gradclip.app.training.metrics_log import truncate_after
from gradclip.app.training.rundir import (
    METRICS,
    json_safe,
    open_no_follow,
    os_error,
    refuse_link,
)

TENSORBOARD_DIR = "tensorboard"
FLUSH_SECONDS = 30.0  # metrics.jsonl reaches the file at least this often
PROGRESS_SECONDS = 30.0  # a plain progress line at least this often

Clock = Callable[[], float]


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

    Lines are kept in memory and written, whole, every ``every`` steps (``--log-every``; 0:
    by time only) and at least every ``seconds`` seconds; a ``flush`` (before every
    checkpoint) also ``fsync``-s them. Each write is one system call of whole lines, so a run
    killed at any moment leaves no torn line. On resume, records after the checkpointed step
    are dropped first, so that the log matches the weights; unreadable lines or missing steps
    are reported in one line on stderr.

    Args:
        run_dir: the run folder.
        every: write the pending lines at every step that is a multiple of ``every``.
        seconds: write them when this long has passed since the last write.
        clock: the time source (seconds; tests pass a fake one).
    """

    def __init__(self, run_dir: Path, *, every: int = 0, seconds: float = FLUSH_SECONDS,
                 clock: Clock = time.monotonic):
        self.path = Path(run_dir) / METRICS
        self.every, self.seconds, self.clock = every, seconds, clock
        self.descriptor: int | None = None
        self.pending: list[str] = []
        self.written_at = 0.0

    def start(self, step: int, total: int) -> None:
        refuse_link(self.path)  # resume would read, cut and append to what the link names
        warning = truncate_after(self.path, step).warning(self.path, step)
        if warning:
            print(warning, file=sys.stderr)
        self.descriptor = open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.written_at = self.clock()

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        self.pending.append(json.dumps(json_safe(record)) + "\n")
        step = record.get("step")
        if (self.every and isinstance(step, int) and step % self.every == 0) \
                or self.clock() - self.written_at >= self.seconds:
            self.write_pending()

    def write_pending(self) -> None:
        """Append the pending lines to the file in one write (the OS may still buffer it)."""
        data = "".join(self.pending).encode()
        self.pending.clear()
        self.written_at = self.clock()
        try:
            while data:
                data = data[os.write(self.descriptor, data):]
        except OSError as error:
            raise os_error(self.path, error) from None

    def flush(self) -> None:
        self.write_pending()
        try:
            os.fsync(self.descriptor)
        except OSError as error:
            raise os_error(self.path, error) from None

    def close(self) -> None:
        if self.descriptor is not None:
            try:
                self.write_pending()
            finally:
                os.close(self.descriptor)
                self.descriptor = None


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


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a time span as a reader says it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLines(StepLogger):
    """A plain line on stdout at least every ``seconds`` seconds while steps are made:
    ``step 120/760, loss 0.2178, 2.4 steps/s, ETA 4 min 27 s``; for logs, CI and notebooks
    (a run shorter than ``seconds`` prints none: its summary follows at once).

    Args:
        label: what the line starts with (a run folder among several), or ``""``.
        seconds: the longest silence between two lines while steps are made.
        clock: the time source (seconds; tests pass a fake one).
    """

    def __init__(self, label: str = "", *, seconds: float = PROGRESS_SECONDS,
                 clock: Clock = time.monotonic):
        self.prefix = f"{label}: " if label else ""
        self.seconds, self.clock = seconds, clock
        self.total = self.first_step = 0
        self.started = self.printed_at = 0.0

    def start(self, step: int, total: int) -> None:
        self.total, self.first_step = total, step
        self.started = self.printed_at = self.clock()

    def log_step(self, record: dict[str, Any], model: nn.Module, health: Any = None) -> None:
        now, step = self.clock(), record["step"]
        if now - self.printed_at < self.seconds:
            return
        self.printed_at = now
        print(self.prefix + self.line(step, record["loss"], now - self.started), flush=True)

    def line(self, step: int, loss: float, elapsed: float) -> str:
        """``step k/n, loss x, r steps/s, ETA t`` (the rate over this process's steps)."""
        done = step - self.first_step
        rate = done / elapsed if elapsed > 0 else math.inf
        text = f"step {step}/{self.total}, loss {loss:.4g}"
        if math.isfinite(rate) and rate > 0:
            text += f", {rate:.3g} steps/s, ETA {duration((self.total - step) / rate)}"
        return text


class TensorBoardLogger(StepLogger):
    """Scalars every step; per-layer norms and histograms at the ``--log-every`` steps."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install 'gradclip[tensorboard]'") from None
        refuse_link(Path(run_dir) / TENSORBOARD_DIR)
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


def run_loggers(run_dir: Path, *, progress: bool | None, tensorboard: bool = False,
                log_every: int = 0) -> list[StepLogger]:
    """The writer's loggers: metrics always (written every ``log_every`` steps and every
    ``FLUSH_SECONDS``), then the progress: ``progress=None`` (auto) is the bar on a terminal
    and plain lines elsewhere, ``True`` the bar always, ``False`` nothing."""
    loggers: list[StepLogger] = [MetricsLogger(run_dir, every=log_every)]
    if progress is None:
        loggers.append(ProgressLogger() if sys.stdout.isatty() else ProgressLines())
    elif progress:
        loggers.append(ProgressLogger())
    if tensorboard:
        loggers.append(TensorBoardLogger(run_dir))
    return loggers
