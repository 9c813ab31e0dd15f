"""The training loop, readable top to bottom: ``Trainer.optimizer_step`` is one step.

Its collaborators are passed in and called where the reader sees them: the ``Parallel``
(single process, DDP or FSDP2: wrapping, this rank's slice of a batch, ``no_sync``, the
collectives and the checkpoint backend), the gradient monitor, and the loggers
(``metrics.jsonl``, the progress bar, TensorBoard). There are no patched methods and no
wrapped clipper.

Non-finite handling is the clipper's ``nonfinite=`` policy, one policy with one norm pass
(``--nonfinite`` is merged into it by ``clipper_from_spec``): ``propagate`` (default) steps
anyway, as torch does, and stops the run at the first non-finite loss (the weights are then
NaN; the summary says "diverged"); ``skip`` skips the optimizer step when the loss or the
gradient norm is not finite and counts it; ``error`` stops with an error naming the first
parameter whose gradient holds NaN/Inf.

Everything that decides the next step lives in the checkpoint (model, optimizer, scheduler,
clipper, scaler, RNG states, data position, counters), so a resumed run is bit-identical to
an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app.config import RunConfig
from gradclip.app.cpus import usable_cpus
from gradclip.app.errors import Interrupted, TrainingError, UserError
from gradclip.app.models import build_model
from gradclip.app.tasks.base import Task
from gradclip.app.training import checkpoint as checkpoints
from gradclip.app.training.checkpoint_check import (
    check_clipper,
    check_config,
    check_counters,
    check_model,
    check_optimizer,
    check_scheduler,
)
from gradclip.app.training.loggers import StepLogger
from gradclip.app.training.memory import is_out_of_memory
from gradclip.app.training.parallel import Parallel
from gradclip.app.training.rundir import CONFIG, SUMMARY, write_json
from gradclip.app.training.setup import (
    autocast,
    build_optimizer,
    build_scheduler,
    check_amp,
    clipper_from_spec,
    grad_scaler,
)
from gradclip.app.training.stopping import StopRequest, stop_on_signals
from gradclip.functional import get_total_norm
from gradclip.monitor import GradientMonitor, GradientReport
from gradclip.monitor.statistics import module_path
from gradclip.nonfinite import NonFiniteGradientError
from gradclip.parameters import named_grads
from gradclip.stats import ClipStats

BEST = "best.pt"  # --keep-best: the weights with the best validation metric


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
    best_score: float | None = None  # --keep-best: the best validation metric so far
    best_step: int | None = None


@dataclass
class StepReport:
    """What one optimizer step did, as host numbers (read in one transfer, for logging)."""

    loss: float
    grad_norm: float
    threshold: float | None
    clipped: bool
    skipped: bool
    nonfinite_loss: bool


def module_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each module that owns parameters (``layers.0.directions.1``).

    Modules are named as the monitor names them (``module_path``; root parameters are
    ``"(root)"``). ``get_total_norm`` reduces sharded (FSDP2 DTensor) gradients over ranks.
    """
    grads: dict[str, list[Tensor]] = {}
    for name, grad in named_grads(model.named_parameters()):
        grads.setdefault(module_path(name), []).append(grad.detach())
    norms = torch.stack([get_total_norm(group).float() for group in grads.values()]).tolist()
    return dict(zip(grads, norms, strict=True))


class Trainer:
    """One run on one process or one rank: builds its parts from the config, trains resumably.

    Args:
        run_dir: the run folder (only the writer rank writes into it).
        config: the run's typed configuration.
        task: the task, built from ``config.task``.
        parallel: single process (the default), DDP or FSDP2 (``gradclip.app.training.parallel``).
    """

    def __init__(self, run_dir: Path, config: RunConfig, task: Task,
                 parallel: Parallel | None = None):
        self.run_dir, self.config, self.task = Path(run_dir), config, task
        self.parallel = parallel = parallel or Parallel.single(config.train.device)
        train = config.train
        torch.set_num_threads(min(train.threads, usable_cpus()))  # never more than the cores
        self.device = parallel.device
        check_amp(train.amp, self.device)
        parallel.check(train)
        if parallel.mode != "none" and not task.distributed:
            raise UserError(f"--task {task.name} cannot run with --distributed {parallel.mode} "
                            f"({task.not_distributed_because})")
        torch.manual_seed(train.seed)
        random.seed(train.seed)
        # Wrapped (DDP, FSDP2) before the optimizer is built over its parameters.
        self.model = parallel.wrap(build_model(task, **asdict(config.model)).to(self.device))
        # a model may give its parameters in groups with their own settings (text: wide path)
        groups = getattr(getattr(self.model, "module", self.model), "parameter_groups", None)
        self.optimizer = build_optimizer(train, groups(train.lr) if groups
                                         else self.model.parameters())
        self.scheduler = build_scheduler(self.optimizer, train.schedule, train.total_steps,
                                         warmup_steps=train.warmup_steps,
                                         min_lr_ratio=train.min_lr_ratio)
        self.clipper = clipper_from_spec(train.clip, train.nonfinite)
        self.scaler = grad_scaler(train.amp, self.device)
        parallel.seed_rank(train.seed)  # independent dropout masks on each rank
        self.counters = Counters()
        self.stop, self.stop_agreed = StopRequest(), False

    # ----------------------------------------------------------------- one optimizer step
    def optimizer_step(self, monitor: GradientMonitor | None, log_layers: bool
                       ) -> tuple[StepReport, GradientReport | None, dict[str, float] | None]:
        """Accumulate, unscale, monitor, clip once, step unless skipped, update, schedule.

        Host syncs: one per step to read the report (after its all-reduce when distributed);
        under ``nonfinite="error"`` the clipper reads the norm to decide whether to raise;
        fp16's ``scaler.step`` reads ``found_inf``; logging steps read the per-layer norms.
        """
        accumulate = self.config.train.accumulate
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        for micro in range(accumulate):
            batch, weight = self.parallel.slice_batch(self.next_batch())
            batch = batch.to(self.device)
            with self.parallel.no_sync(self.model, last=micro == accumulate - 1):
                with autocast(self.config.train.amp, self.device):
                    outputs = self.model(batch.inputs, batch.lengths)
                loss_micro = self.task.loss(outputs.float(), batch) * weight / accumulate
                self.scaler.scale(loss_micro).backward()
            loss = loss + loss_micro.detach()

        self.scaler.unscale_(self.optimizer)  # clip true gradients, never scaled ones
        health = monitor.step() if monitor is not None else None  # raw gradients, visibly
        layer_norms = module_grad_norms(self.model) if log_layers else None
        stats = self.clip(loss)
        report = self.report(loss, stats)
        if not report.skipped:
            self.scaler.step(self.optimizer)  # optimizer.step() without fp16
        self.scaler.update()
        self.scheduler.step()
        return report, health, layer_norms

    def next_batch(self) -> Any:
        """The next micro-batch of the task's stream (the data position is checkpointed)."""
        batch = self.task.train_batch(self.counters.next_batch_index)
        self.counters.next_batch_index += 1
        return batch

    def clip(self, loss: Tensor) -> ClipStats:
        """The clipper, once per optimizer step, with the run's one non-finite policy; it sees
        this rank's loss (``SpikeSkip`` averages it over the ranks)."""
        try:
            return self.clipper.clip_(self.model.named_parameters(), loss=loss)
        except NonFiniteGradientError as error:  # nonfinite="error"
            raise TrainingError(f"step {self.counters.step + 1}: {error}") from None

    def report(self, loss: Tensor, stats: ClipStats) -> StepReport:
        """The step's numbers, agreed by every rank, on the host in one transfer.

        The agreement also carries this rank's stop request (a signal), so that every rank
        stops after the same step.
        """
        nonfinite_loss = ~torch.isfinite(loss)
        skipped = stats.skipped.to(self.device)
        if self.clipper.nonfinite == "skip":
            skipped = skipped | nonfinite_loss
        stop = torch.tensor(self.stop.requested, device=self.device)
        flags = torch.stack([stats.clipped.to(self.device), skipped, nonfinite_loss,
                             stop]).float()
        loss, flags = self.parallel.mean_and_any(loss.float(), flags)
        threshold = stats.threshold
        values = torch.cat([
            torch.stack([loss, stats.total_norm.to(self.device).float(),
                         (torch.tensor(math.nan) if threshold is None else threshold)
                         .to(self.device).float()]),
            flags.float()]).tolist()
        report = StepReport(values[0], values[1], None if threshold is None else values[2],
                            values[3] > 0, values[4] > 0, values[5] > 0)
        self.stop_agreed = values[6] > 0
        if self.clipper.nonfinite == "error" and report.nonfinite_loss:
            raise TrainingError(f"step {self.counters.step + 1}: the loss is not finite")
        return report

    # ----------------------------------------------------------------- the run
    def train(self, checkpoint: dict[str, Any] | None = None, *,
              monitor: GradientMonitor | None = None, loggers: Sequence[StepLogger] = ()
              ) -> dict[str, Any]:
        """Train to ``total_steps``, continuing from ``checkpoint`` (a loaded one) if given.

        Args:
            checkpoint: a loaded ``checkpoint.pt`` to resume from, or ``None`` for a new run.
            monitor: a ``GradientMonitor`` stepped on the raw gradients of every step.
            loggers: each gets every step's metrics record (``log_step``), a ``flush`` before
                every checkpoint and a ``close`` at the end.

        Returns:
            The run's summary (also written to ``summary.json``).
        """
        if checkpoint is not None:
            self.load(checkpoint)
        total, counters = self.config.train.total_steps, self.counters
        for logger in loggers:
            logger.start(counters.step, total)
        self.model.train()
        started = time.perf_counter() - counters.seconds
        try:
            try:
                with stop_on_signals() as self.stop:
                    while counters.step < total and counters.status == "running":
                        record, health = self.train_one_step(monitor)
                        counters.seconds = time.perf_counter() - started
                        for logger in loggers:
                            logger.log_step(record, self.model, health)
                        if self.stop_agreed or counters.step == total or self.due(
                                counters.step, self.config.train.checkpoint_every):
                            for logger in loggers:
                                logger.flush()
                            self.save()
                        if self.stop_agreed:
                            self.interrupt()
            finally:
                for logger in loggers:
                    logger.close()
            if counters.status == "running":
                counters.status = "completed"
            return self.finish()
        except UserError as error:
            self.record_failure(error)
            raise

    def record_failure(self, error: UserError) -> None:
        """A run stopped by a file system refusal (a full disk) or a user mistake:
        ``summary.json`` says ``failed`` with the reason, never ``running`` (best effort:
        on a full disk even this small file may not fit)."""
        if self.parallel.is_writer:
            with contextlib.suppress(UserError):
                write_json(self.run_dir / SUMMARY,
                           self.summary(None) | {"status": "failed", "error": str(error)})

    def interrupt(self) -> None:
        """After a stop signal: the step's checkpoint is written; say so and stop."""
        if self.parallel.is_writer:
            write_json(self.run_dir / SUMMARY, self.summary(None) | {"status": "interrupted"})
        number = self.stop.signal or signal.SIGTERM  # a rank stopped by another's signal
        name = signal.Signals(number).name
        raise Interrupted(f"interrupted by {name} after step {self.counters.step}; the "
                          f"checkpoint is saved: continue with --resume {self.run_dir}", number)

    def train_one_step(self, monitor: GradientMonitor | None = None
                       ) -> tuple[dict[str, Any], GradientReport | None]:
        """Run one optimizer step, update the counters; its metrics record and health report."""
        counters = self.counters
        lr = self.scheduler.get_last_lr()[0]
        log_layers = self.due(counters.step + 1, self.config.train.log_every)
        try:
            report, health, layer_norms = self.optimizer_step(monitor, log_layers)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            raise UserError(f"out of memory at step {counters.step + 1}: choose a smaller "
                            "--batch-size, --hidden-size or sequence length") from None
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
        if self.due(counters.step, self.config.train.eval_every):
            record["eval"] = self.evaluate()
            self.keep_if_best(record["eval"])
        return record, health

    def keep_if_best(self, scores: dict[str, Any]) -> None:
        """``--keep-best``: write the weights to ``best.pt`` when the task's metric improves."""
        score = scores.get(self.task.metric_name)
        if not self.config.train.keep_best or not isinstance(score, int | float) \
                or not math.isfinite(score):
            return
        best = self.counters.best_score
        better = best is None or (score > best if self.task.higher_is_better else score < best)
        if not better:
            return
        self.counters.best_score, self.counters.best_step = float(score), self.counters.step
        state = self.parallel.model_state(self.model, self.optimizer, self.run_dir,
                                          self.counters.step)
        if self.parallel.is_writer:
            checkpoints.save_checkpoint(self.run_dir, {
                "model": state["model"], "optimizer": {}, "step": self.counters.step,
                "metric": self.task.metric_name, "score": float(score)}, BEST)

    @staticmethod
    def due(step: int, interval: int) -> bool:
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
        scores = self.evaluate()
        self.keep_if_best(scores)
        summary = self.summary(scores)
        if self.parallel.is_writer:
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
    def check_fits(self, state: dict[str, Any]) -> None:
        """The checkpoint's model, optimizer, scheduler, clipper and counters fit the run
        ``config.json`` builds (``checkpoint_check``): nothing is loaded before all of it is
        checked.

        Raises:
            UserError: one line naming the first field that does not fit.
        """
        path, train = self.run_dir / checkpoints.CHECKPOINT, self.config.train
        config_path = self.run_dir / CONFIG
        check_model(state["model"], self.parallel.unwrap(self.model), path)
        if "sharded" not in state:  # FSDP: the optimizer's state is in the DCP folder
            check_optimizer(state["optimizer"], self.optimizer, path, config_path)
        check_scheduler(state["scheduler"], self.scheduler, path, config_path)
        check_clipper(state["clipper"], train.clip, train.nonfinite, path)
        check_counters(state["counters"], Counters, state, train.total_steps, path)
        check_config(state.get("config"), self.config.to_dict(), path, config_path)

    def save(self) -> None:
        """Write ``checkpoint.pt`` (the writer rank; FSDP shards from every rank first)."""
        step = self.counters.step
        state = {
            **self.parallel.model_state(self.model, self.optimizer, self.run_dir, step),
            "scheduler": self.scheduler.state_dict(),
            "clipper": self.clipper.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": step,
            "next_batch_index": self.counters.next_batch_index,
            "counters": asdict(self.counters),
            "config": self.config.to_dict(),  # resume refuses a config.json edited since
            **self.parallel.rng_state(),
        }
        if self.counters.status != "running":  # finished: no step is left to resume
            state["optimizer"] = checkpoints.without_moments(state["optimizer"])
        if self.parallel.is_writer:
            checkpoints.save_checkpoint(self.run_dir, state)
            if self.counters.status == "running":
                write_json(self.run_dir / SUMMARY, self.summary(None))
            self.parallel.after_save(self.run_dir, state)
        self.parallel.barrier()

    def load(self, state: dict[str, Any]) -> None:
        """Restore everything a checkpoint holds, so the run continues bit-identically.

        Raises:
            UserError: a checkpoint that does not fit this run (checked before anything is
                loaded: ``check_fits``).
        """
        self.check_fits(state)
        self.parallel.load_model_state(self.model, self.optimizer, state, self.run_dir)
        self.scheduler.load_state_dict(state["scheduler"])
        self.clipper.load_state_dict(state["clipper"])
        if self.scaler.is_enabled() and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.counters = Counters(**state["counters"])
        self.parallel.restore_rng(state)

