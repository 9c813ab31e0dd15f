"""The training loop, readable top to bottom.

One optimizer step::

    optimizer.zero_grad(set_to_none=True)
    for each of `accumulate` micro-batches:
        with autocast:  loss = task.loss(model(batch), batch) / accumulate
        scaler.scale(loss).backward()          # plain backward() without fp16 AMP
    scaler.unscale_(optimizer)                 # AMP: clip true gradients, never scaled ones
    stats = clipper.clip_(named_parameters)    # once per optimizer step, after accumulation
    optimizer.step() unless skipped            # scaler.step(optimizer) under fp16 AMP
    scaler.update(); scheduler.step()

Non-finite handling (``--nonfinite``): ``propagate`` (default) steps anyway, as torch does, and
stops the run at the first non-finite loss (the weights are then NaN; the summary says
"diverged"); ``skip`` skips the optimizer step when the loss or the gradient norm is not finite
and counts it; ``error`` stops with an error naming the first parameter whose gradient holds
NaN/Inf. A clipper built with ``nonfinite=skip`` in its spec skips steps the same way.

Everything that decides the next step lives in the checkpoint (model, optimizer, scheduler,
clipper, scaler, RNG states, data position, counters), so a resumed run is bit-identical to
an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app import checkpoint as checkpoints
from gradclip.app.clipping import clipper_from_spec
from gradclip.app.models import build_model
from gradclip.app.optimization import (
    autocast,
    build_optimizer,
    build_scheduler,
    check_amp,
    grad_scaler,
    resolve_device,
)
from gradclip.app.run_dir import SUMMARY, MetricsLog, write_json
from gradclip.app.tasks.base import Task
from gradclip.functional import get_total_norm
from gradclip.nonfinite import raise_if_nonfinite
from gradclip.parameters import named_grads

NONFINITE_POLICIES = ("propagate", "skip", "error")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite gradient under ``--nonfinite error``)."""


@dataclass
class Counters:
    """Running totals of a run; checkpointed, so they survive a resume."""

    step: int = 0
    next_batch_index: int = 0
    clipped_steps: int = 0
    skipped_steps: int = 0
    nonfinite_loss_steps: int = 0
    first_nonfinite_step: int | None = None
    max_grad_norm: float = 0.0
    last_loss: float = math.nan
    seconds: float = 0.0
    status: str = "running"


@dataclass
class StepReport:
    """What one optimizer step did, as host numbers (one sync per step, for logging)."""

    loss: float
    grad_norm: float
    threshold: float | None
    clipped: bool
    skipped: bool
    nonfinite_loss: bool


def per_layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each module that owns parameters (``layers.0.directions.1``)."""
    grads: dict[str, list[Tensor]] = {}
    for name, grad in named_grads(model.named_parameters()):
        module = name.rpartition(".")[0] or name
        grads.setdefault(module, []).append(grad.detach())
    # get_total_norm reduces sharded (FSDP2 DTensor) gradients over their ranks.
    norms = torch.stack([get_total_norm(group).float() for group in grads.values()]).tolist()
    return dict(zip(grads, norms, strict=True))


class Trainer:
    """Builds a run from its ``config.json`` settings and trains it, resumably."""

    def __init__(self, run_dir: Path, config: dict[str, Any], task: Task):
        self.run_dir, self.config, self.task = Path(run_dir), config, task
        self.settings = settings = config["train"]
        torch.set_num_threads(settings["threads"])
        self.device = resolve_device(settings["device"])
        check_amp(settings["amp"], self.device)
        torch.manual_seed(settings["seed"])
        random.seed(settings["seed"])
        self.model = build_model(task, **config["model"]).to(self.device)
        self.optimizer = build_optimizer(settings["optimizer"], self.model.parameters(),
                                         settings["lr"], settings["momentum"],
                                         settings["weight_decay"])
        self.scheduler = build_scheduler(self.optimizer, settings["schedule"],
                                         settings["total_steps"])
        self.clipper = clipper_from_spec(settings["clip"])
        self.scaler = grad_scaler(settings["amp"], self.device)
        self.counters = Counters()

    # ----------------------------------------------------------------- one optimizer step
    def optimizer_step(self, log_layers: bool) -> tuple[StepReport, dict[str, float] | None]:
        """Accumulate, unscale, clip once, step unless skipped, update, schedule."""
        accumulate, policy = self.settings["accumulate"], self.settings["nonfinite"]
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        for _ in range(accumulate):
            batch = self.task.train_batch(self.counters.next_batch_index).to(self.device)
            self.counters.next_batch_index += 1
            with autocast(self.settings["amp"], self.device):
                outputs = self.model(batch.inputs, batch.lengths)
            micro_loss = self.task.loss(outputs.float(), batch) / accumulate
            self.backward(micro_loss)
            loss = loss + micro_loss.detach()

        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if policy == "error":
            self.raise_if_nonfinite(loss)
        layer_norms = per_layer_grad_norms(self.model) if log_layers else None
        stats = self.clipper.clip_(self.model.named_parameters())

        nonfinite_loss = ~torch.isfinite(loss)
        skipped = stats.skipped.to(self.device)
        if policy == "skip":
            skipped = skipped | nonfinite_loss | ~torch.isfinite(stats.total_norm.to(self.device))
        report = self.report(loss, stats, skipped, nonfinite_loss)

        if not report.skipped:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        self.scheduler.step()
        return report, layer_norms

    def backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def raise_if_nonfinite(self, loss: Tensor) -> None:
        """``--nonfinite error``: stop, naming the first parameter with a NaN/Inf gradient."""
        grads = named_grads(self.model.named_parameters())
        try:
            raise_if_nonfinite(grads, get_total_norm([grad for _, grad in grads]))
        except RuntimeError as error:
            raise TrainingError(f"step {self.counters.step + 1}: {error}") from None
        if not bool(torch.isfinite(loss)):
            raise TrainingError(f"step {self.counters.step + 1}: the loss is not finite")

    def report(self, loss: Tensor, stats: Any, skipped: Tensor, nonfinite_loss: Tensor
               ) -> StepReport:
        """The step's numbers on the host, read in one transfer."""
        threshold = stats.threshold
        values = torch.stack([
            loss.float(), stats.total_norm.to(self.device).float(),
            (torch.tensor(math.nan) if threshold is None else threshold).to(self.device).float(),
            stats.clipped.to(self.device).float(), skipped.float(), nonfinite_loss.float(),
        ]).tolist()
        return StepReport(values[0], values[1], None if threshold is None else values[2],
                          values[3] > 0, values[4] > 0, values[5] > 0)

    # ----------------------------------------------------------------- the run
    def train(self, checkpoint: dict[str, Any] | None = None, progress: bool | None = None
              ) -> dict[str, Any]:
        """Train to ``total_steps``, continuing from ``checkpoint`` (a loaded one) if given."""
        resume = checkpoint is not None
        if resume:
            self.load(checkpoint)
        else:
            self.task.save(self.run_dir)
        total, counters = self.settings["total_steps"], self.counters
        metrics = MetricsLog(self.run_dir, keep_through_step=counters.step if resume else None)
        bar = progress_bar(total, counters.step, progress)
        self.model.train()
        started = time.perf_counter() - counters.seconds
        try:
            while counters.step < total and counters.status == "running":
                record = self.train_one_step()
                counters.seconds = time.perf_counter() - started
                metrics.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}", grad_norm=f"{record['grad_norm']:.3g}",
                                refresh=False)
                if self.due(counters.step, "checkpoint_every") or counters.step == total:
                    metrics.flush()
                    self.save()
        finally:
            bar.close()
            metrics.close()
        if counters.status == "running":
            counters.status = "completed"
        return self.finish()

    def train_one_step(self) -> dict[str, Any]:
        """Run one optimizer step, update the counters and return its metrics record."""
        counters = self.counters
        lr = self.scheduler.get_last_lr()[0]
        log_layers = self.due(counters.step + 1, "log_every")
        report, layer_norms = self.optimizer_step(log_layers)
        counters.step += 1
        counters.clipped_steps += report.clipped
        counters.skipped_steps += report.skipped
        counters.last_loss = report.loss
        if math.isfinite(report.grad_norm):
            counters.max_grad_norm = max(counters.max_grad_norm, report.grad_norm)
        if report.nonfinite_loss:
            counters.nonfinite_loss_steps += 1
            if counters.first_nonfinite_step is None:
                counters.first_nonfinite_step = counters.step
            if not report.skipped:  # the NaN reached the weights (a skipped step kept them)
                counters.status = "diverged"
        record: dict[str, Any] = {"step": counters.step, **asdict(report), "lr": lr}
        del record["nonfinite_loss"]
        if layer_norms is not None:
            record["layer_grad_norms"] = layer_norms
        if self.due(counters.step, "eval_every"):
            record["eval"] = self.evaluate()
        return record

    def due(self, step: int, every: str) -> bool:
        interval = self.settings[every]
        return interval > 0 and step % interval == 0

    def evaluate(self) -> dict[str, Any]:
        """The task's validation scores, in eval mode; the model goes back to train mode."""
        self.model.eval()
        with torch.no_grad():
            scores = self.task.evaluate(self.model, self.device)
        self.model.train()
        return scores

    def finish(self) -> dict[str, Any]:
        """Score the final weights, write the last checkpoint and ``summary.json``."""
        self.save()
        summary = self.summary(self.evaluate())
        write_json(self.run_dir / SUMMARY, summary)
        return summary

    def summary(self, scores: dict[str, Any] | None) -> dict[str, Any]:
        counters = self.counters
        summary = {key: value for key, value in asdict(counters).items()
                   if key not in ("next_batch_index", "last_loss")}
        summary.update(task=self.task.name, metric=self.task.metric_name,
                       final_train_loss=counters.last_loss, eval=scores,
                       success=None if scores is None else scores.get("success"),
                       success_criterion=self.task.success_criterion, data=self.task.describe())
        return summary

    # ----------------------------------------------------------------- checkpoints
    def save(self) -> None:
        checkpoints.save_checkpoint(self.run_dir, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "clipper": self.clipper.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "step": self.counters.step,
            "next_batch_index": self.counters.next_batch_index,
            "counters": asdict(self.counters),
            "rng": checkpoints.rng_states(),
        })
        if self.counters.status == "running":
            write_json(self.run_dir / SUMMARY, self.summary(None))

    def load(self, state: dict[str, Any]) -> None:
        """Restore everything a checkpoint holds, so the run continues bit-identically."""
        self.load_weights(state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.clipper.load_state_dict(state["clipper"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.counters = Counters(**state["counters"])
        self.restore_rng(state)

    def load_weights(self, state: dict[str, Any]) -> None:
        """Model and optimizer state (a distributed run reads its shards instead)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def restore_rng(self, state: dict[str, Any]) -> None:
        checkpoints.restore_rng_states(state["rng"])


class _QuietBar:
    """Stands in for a progress bar when stdout is not a terminal."""

    def update(self, count: int) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool | None) -> Any:
    """A tqdm bar over optimizer steps, shown only on a terminal (``enabled=None``: auto)."""
    if enabled is None:
        enabled = sys.stdout.isatty()
    if not enabled:
        return _QuietBar()
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError("progress bars need tqdm: pip install 'gradclip[app]'") from None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
