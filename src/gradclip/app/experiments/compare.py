"""``gradclip compare``: a grid of ordinary training runs, and its aggregated table.

The grid is every combination of model x sequence length x learning rate x clip spec x
seed. Each point is a normal ``gradclip train`` run in its own directory under
``<out>/runs/``, trained in a worker process, with a ``GradientMonitor`` reporting every
``--log-every`` steps; its report on the final step is kept in ``monitor.json``. Runs that
share all but the seed form one row of the table.

A run *diverged* when its loss became non-finite, or its final validation loss is more than
``DIVERGENCE_FACTOR`` times its first training loss (an exploding, but finite, loss).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradclip.app.errors import TrainingError, UserError
from gradclip.app.experiments.diagnosis import diagnose_result
from gradclip.app.experiments.run_files import MONITOR, read_monitor, read_summary
from gradclip.app.experiments.workers import worker_count, worker_pool
from gradclip.app.training.loggers import MetricsLogger, ProgressLines, StepLogger
from gradclip.app.training.metrics_log import number, read_metrics
from gradclip.app.training.rundir import remove_folder, write_json
from gradclip.app.training.runs import NewRun, create_run
from gradclip.app.training.trainer import Trainer
from gradclip.monitor import GradientMonitor
from gradclip.monitor.diagnosis import RUN_KINDS

DIVERGENCE_FACTOR = 10.0


@dataclass(frozen=True)
class Setting:
    """One row of the table: everything but the seed."""

    model: str
    seq_len: int | None
    lr: float
    clip: str

    def label(self, varying: Sequence[str]) -> str:
        parts = {"model": self.model, "seq_len": f"T={self.seq_len}", "lr": f"lr={self.lr:g}",
                 "clip": self.clip}
        return " ".join(parts[key] for key in varying) or self.clip

    def folder(self, seed: int) -> str:
        clip = "".join(c if c.isalnum() or c in ".-" else "_" for c in self.clip)
        length = "" if self.seq_len is None else f"-T{self.seq_len}"
        return f"{self.model}{length}-lr{self.lr:g}-{clip}-seed{seed}"


def grid(models: Sequence[str], seq_lens: Sequence[int | None], lrs: Sequence[float],
         clips: Sequence[str]) -> list[Setting]:
    """Every setting of the grid, in the order of the command-line lists."""
    return [Setting(model, seq_len, lr, clip)
            for model in models for seq_len in seq_lens for lr in lrs for clip in clips]


def train_one(new: NewRun, progress: bool = False) -> dict[str, Any]:
    """Train one run (in a worker process); its summary and the monitor's last verdict.

    A ``GradientMonitor`` reads the raw gradients of every step (reporting every
    ``--log-every`` steps) when ``log_every`` is set. ``progress``: a plain line
    (``ProgressLines``, labelled with the run folder) at least every 30 s while it trains.
    """
    started = time.perf_counter()
    with create_run(new) as current:
        run_dir = current.run_dir
        trainer = Trainer(run_dir, current.config, current.task)
        every = current.config.train.log_every
        monitor = GradientMonitor(trainer.model, every=every) if every else None
        try:
            summary = trainer.train(monitor=monitor,
                                    loggers=grid_loggers(run_dir, every, progress))
        except TrainingError as error:
            summary = trainer.summary(None) | {"status": f"stopped: {error}"}
    # the state at the last step, also when training stopped between reports (NaN)
    report = None if monitor is None else monitor.report()
    monitored = None if report is None else report.to_dict()
    if monitored is not None:
        write_json(run_dir / MONITOR, monitored)
    return {"run_dir": str(run_dir), "summary": summary, "monitor": monitored,
            "wall_seconds": time.perf_counter() - started}


def grid_loggers(run_dir: Path, log_every: int, progress: bool) -> list[StepLogger]:
    """A grid run's loggers: ``metrics.jsonl``, and progress lines named by the folder."""
    loggers: list[StepLogger] = [MetricsLogger(run_dir, every=log_every)]
    return loggers + [ProgressLines(run_dir.name)] if progress else loggers


def run_grid(points: list[tuple[Any, NewRun]], keys: list[Any], jobs: int, *,
             reuse_finished: bool = False, progress: bool = True
             ) -> dict[Any, list[dict[str, Any]]]:
    """Train every point's run, ``jobs`` processes at a time; results grouped by key.

    Args:
        points: ``(key, run)`` pairs; runs sharing a key (a setting) form one table row.
        keys: every key, in the order of the rows.
        jobs: runs trained at once, each in its own process (1: in this process); capped
            at the runs to train and a multiple of the cores (``worker_count``). Workers
            die with this process.
        reuse_finished: keep the result of a run folder that already finished (a rerun of
            a half-done grid trains only what is missing); otherwise an existing folder is
            a ``UserError``.
        progress: print one line per finished run (runs done of all, its outcome, an ETA)
            and, while runs train, a line per run at least every 30 s (step, loss, ETA).
    """
    results: list[dict[str, Any] | None] = [None] * len(points)
    todo = []
    for index, (_, new) in enumerate(points):
        if new.run_dir is not None and new.run_dir.exists():
            if not reuse_finished:
                raise UserError(f"{new.run_dir} exists; choose a new --out folder")
            results[index] = finished_result(new.run_dir)
            if results[index] is None:
                remove_folder(new.run_dir)  # unfinished: trained again from the start
        if results[index] is None:
            todo.append(index)
    folders = [str(new.run_dir) for _, new in points if new.run_dir is not None]
    root = Path(os.path.commonpath(folders)) if len(folders) > 1 else None
    meter = ProgressLine(len(points), len(points) - len(todo), enabled=progress, root=root)
    jobs = worker_count(jobs, len(todo))
    if jobs <= 1:
        for index in todo:
            results[index] = meter.done(train_one(points[index][1], progress))
    else:
        with worker_pool(jobs) as pool:
            futures = {pool.submit(train_one, points[index][1], progress): index
                       for index in todo}
            for future in as_completed(futures):
                results[futures[future]] = meter.done(future.result())
    grouped: dict[Any, list[dict[str, Any]]] = {key: [] for key in keys}
    for (key, _), result in zip(points, results, strict=True):
        assert result is not None, "every point was trained or read back above"
        grouped[key].append(result)
    return grouped


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The result of a run folder that finished (completed, diverged or stopped), else None.

    Raises:
        UserError: its ``summary.json`` or ``monitor.json`` cannot be used (``run_files``).
    """
    summary = read_summary(run_dir)
    if summary is None or summary["status"] in ("running", "interrupted", "failed"):
        return None
    monitored = read_monitor(run_dir)
    return {"run_dir": str(run_dir), "summary": summary, "monitor": monitored,
            "wall_seconds": summary.get("seconds", math.nan)}


class ProgressLine:
    """``[k/n] run-folder: status, s; ETA`` after each finished run, on stdout.

    The folder is shown below ``root`` (the grid's common folder), so that a benchmark's
    line names the task, the rate and the run (``lm-rnn/lr1/norm_8.2-seed0``); without a
    root, its last two levels.
    """

    def __init__(self, total: int, already: int, enabled: bool = True,
                 root: Path | None = None):
        self.total, self.count, self.enabled, self.root = total, already, enabled, root
        self.started, self.fresh = time.perf_counter(), 0
        if enabled and already:
            print(f"[{already}/{total}] finished earlier, kept", flush=True)

    def done(self, result: dict[str, Any]) -> dict[str, Any]:
        self.count, self.fresh = self.count + 1, self.fresh + 1
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            left = elapsed / self.fresh * (self.total - self.count)
            print(f"[{self.count}/{self.total}] {self.shown(Path(result['run_dir']))}: "
                  f"{result['summary']['status']} in {result['wall_seconds']:.0f} s; "
                  f"ETA {left:.0f} s", flush=True)
        return result

    def shown(self, folder: Path) -> str:
        if self.root is not None and folder.is_relative_to(self.root) and folder != self.root:
            return folder.relative_to(self.root).as_posix()
        return f"{folder.parent.name}/{folder.name}"


def diverged(result: dict[str, Any]) -> bool:
    """Non-finite loss, or a final validation loss ``DIVERGENCE_FACTOR`` x the first loss."""
    summary = result["summary"]
    if summary["nonfinite_loss_steps"] or summary["status"] == "diverged":
        return True
    final = number((summary.get("eval") or {}).get("loss"))
    records = read_metrics(Path(result["run_dir"]))
    first = number(records[0]["loss"]) if records else math.nan
    return not math.isfinite(final) or final > DIVERGENCE_FACTOR * first


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` of the finite values, with the count of non-finite ones."""
    good = [v for v in values if math.isfinite(v)]
    if not good:
        return "NaN"
    text = f"{statistics.mean(good):.3g}"
    if len(good) > 1:
        text += f" ± {statistics.stdev(good):.2g}"
    bad = len(values) - len(good)
    return text + (f" ({bad} NaN)" if bad else "")


def row(setting: Setting, results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The aggregate of one setting over its seeds."""
    summaries = [r["summary"] for r in results]
    evals = [s.get("eval") or {} for s in summaries]
    verdicts = [diagnose_result(r)[0].kind for r in results]
    # the most common; a tie goes to the most severe (never "healthy" beside a divergence)
    common = min(set(verdicts), key=lambda kind: (-verdicts.count(kind),
                                                  RUN_KINDS.index(kind))) if verdicts else "-"
    return {
        "setting": setting, "seeds": len(results),
        "final_loss": [number(e.get("loss")) for e in evals],
        "metric": [number(e.get(metric)) for e in evals],
        "success": sum(bool(s.get("success")) for s in summaries),
        "diverged": sum(diverged(r) for r in results),
        "clip_rate": statistics.mean(s["clipped_steps"] / max(1, s["step"]) for s in summaries),
        "max_grad_norm": statistics.median(s["max_grad_norm"] for s in summaries),
        "verdict": f"{common} {verdicts.count(common)}/{len(results)}" if verdicts else "-",
        "seconds": statistics.mean(s["seconds"] for s in summaries),
    }


def markdown_table(rows: list[dict[str, Any]], metric: str, varying: Sequence[str]) -> str:
    """The report's table, one line per setting."""
    header = (f"| setting | seeds | final val loss | final {metric} | success | diverged "
              f"| clip rate | max grad norm (median) | run verdict | s/run |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['setting'].label(varying)} | {r['seeds']} | {mean_std(r['final_loss'])} "
            f"| {mean_std(r['metric'])} | {r['success']}/{r['seeds']} "
            f"| {r['diverged']}/{r['seeds']} | {r['clip_rate']:.0%} "
            f"| {r['max_grad_norm']:.3g} | {r['verdict']} | {r['seconds']:.1f} |")
    return "\n".join(lines)
