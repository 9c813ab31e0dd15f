"""The default demonstration: a vanilla RNN on the adding problem, trained several ways.

Setting (measured to explode without clipping): adding problem at T=10, ``nn.RNN`` tanh with
64 hidden units, SGD lr 0.15 momentum 0.9 (decayed linearly to 0 over the last 20% of the
steps, so a learning run settles instead of fluctuating at lr 0.15), batch 64, 4,000 steps,
3 seeds. Each
(strategy, seed) pair is a normal ``gradclip train`` run in its own sub-folder of the demo
directory; a run whose loss turns non-finite stops there (its weights are NaN).
"""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradclip
from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.experiments.compare import ProgressLine
from gradclip.app.experiments.demo_setting import (
    BATCH,
    EVAL_EVERY,
    HIDDEN,
    LR,
    MOMENTUM,
    SCHEDULE,
    SEQ_LEN,
)
from gradclip.app.experiments.workers import worker_count, worker_pool
from gradclip.app.tasks.adding import SUCCESS_MSE, AddingTask
from gradclip.app.training.loggers import MetricsLogger, ProgressLines
from gradclip.app.training.metrics_log import read_metrics
from gradclip.app.training.rundir import CONFIG, make_folder, write_json
from gradclip.app.training.trainer import Trainer


def outcome(row: dict[str, Any]) -> str:
    """``validation MSE below 0.01 on k/n seeds (final MSE ...)`` for one strategy."""
    return (f"validation MSE went below 0.01 on {len(row['reached_at'])}/{row['seeds']} seeds "
            f"and ended below it on {row['learnt']}/{row['seeds']} (final MSE "
            f"{format_mse(row['final_mse'])})")


def explanation(rows: list[dict[str, Any]]) -> str:
    """The lesson of the table, with this run's own counts (so it never overstates)."""
    lines = ["How to read this (predicting 1 always scores MSE 0.167):"]
    for row in rows:
        name = row["strategy"]
        if name == "none":
            exploded = len(row["first_nonfinite_steps"])
            lines.append(f"- none: gradient norms reach {row['max_grad_norm']:.2g}; the loss "
                         f"turned NaN on {exploded}/{row['seeds']} seeds"
                         + (", which ends training (the weights are NaN)." if exploded else "."))
        elif name.startswith("norm:"):
            lines.append(f"- {name} bounds the length of every update whatever the gradient "
                         f"did: {outcome(row)}.")
        elif name.startswith("value:"):
            lines.append(f"- {name} clamps each gradient entry, not the norm: {outcome(row)}.")
    if any(row["strategy"].startswith("value:") for row in rows):
        lines.append("A value clip bounds each of this model's ~4,400 gradient entries, so an "
                     "update can still be sqrt(4400) x threshold long: the right value threshold "
                     "depends on the model's size, a norm threshold does not.")
    return "\n".join(textwrap.fill(line, 96, subsequent_indent="  ") for line in lines)


@dataclass(frozen=True)
class DemoRun:
    """One (strategy, seed) run of the demo."""

    strategy: str
    seed: int
    steps: int
    run_dir: Path


def demo_config(run: DemoRun, task: AddingTask) -> RunConfig:
    """The configuration of one demo run (the measured setting above)."""
    return RunConfig(
        task=task.config(), model=ModelConfig(cell="rnn", hidden_size=HIDDEN),
        train=TrainConfig(clip=run.strategy, lr=LR, momentum=MOMENTUM, schedule=SCHEDULE,
                          total_steps=run.steps, batch_size=BATCH, seed=run.seed,
                          device="cpu", log_every=0, eval_every=EVAL_EVERY,
                          checkpoint_every=0),
        gradclip_version=gradclip.__version__)


def train_one(run: DemoRun) -> dict[str, Any]:
    """Train one demo run; returns its summary plus its per-step loss and gradient norm."""
    task = AddingTask(SEQ_LEN, BATCH, run.seed)
    config = demo_config(run, task)
    make_folder(run.run_dir)
    write_json(run.run_dir / CONFIG, config.to_dict())
    trainer = Trainer(run.run_dir, config, task)
    label = run.run_dir.name
    summary = trainer.train(loggers=[MetricsLogger(run.run_dir), ProgressLines(label)])
    records = read_metrics(run.run_dir)
    return {"strategy": run.strategy, "seed": run.seed, "summary": summary,
            "run_dir": str(run.run_dir), "wall_seconds": summary.get("seconds", math.nan),
            "loss": [float(record["loss"]) for record in records],
            "grad_norm": [float(record["grad_norm"]) for record in records],
            "val_mse": [(record["step"], float(record["eval"]["mse"])) for record in records
                        if "eval" in record]}


def run_demo(out: Path, steps: int, seeds: int, strategies: tuple[str, ...], workers: int
             ) -> list[dict[str, Any]]:
    """Every (strategy, seed) run, ``workers`` processes at a time, in a stable order.

    A line per finished run says how many are done and the time left (``ProgressLine``);
    while runs train, each prints its step, loss and ETA at least every 30 s.
    """
    runs = [DemoRun(strategy, seed, steps, out / f"{safe_name(strategy)}-seed{seed}")
            for strategy in strategies for seed in range(seeds)]
    meter = ProgressLine(len(runs), 0)
    workers = worker_count(workers, len(runs))
    if workers <= 1:
        return [meter.done(train_one(run)) for run in runs]
    results: list[dict[str, Any]] = [{} for _ in runs]
    with worker_pool(workers, one_thread) as pool:
        futures = {pool.submit(train_one, run): index for index, run in enumerate(runs)}
        for future in as_completed(futures):
            results[futures[future]] = meter.done(future.result())
    return results


def one_thread() -> None:
    """Worker set-up: one torch thread each, so two workers share two cores fairly."""
    os.environ["OMP_NUM_THREADS"] = "1"


def safe_name(strategy: str) -> str:
    return strategy.replace(":", "_").replace(",", "_").replace("=", "-")


def summary_rows(results: list[dict[str, Any]], strategies: tuple[str, ...]
                 ) -> list[dict[str, Any]]:
    """One row per strategy, aggregated over seeds."""
    rows = []
    for strategy in strategies:
        chosen = [result for result in results if result["strategy"] == strategy]
        runs = [result["summary"] for result in chosen]
        reached = [first_step_below(result["val_mse"], SUCCESS_MSE) for result in chosen]
        # a diverged run has no MSE (its weights are NaN or its outputs overflow): JSON null,
        # shown as NaN in the table, whether torch gave NaN or inf
        mses = [mse if math.isfinite(mse) else None for mse in
                (float(run["eval"]["mse"]) for run in runs)]
        nan_steps = [run["first_nonfinite_step"] for run in runs
                     if run["first_nonfinite_step"] is not None]
        rows.append({
            "strategy": strategy, "seeds": len(runs),
            "final_mse": mses, "learnt": sum(bool(run["success"]) for run in runs),
            "reached_at": [step for step in reached if step is not None],
            "max_grad_norm": max(run["max_grad_norm"] for run in runs),
            "nonfinite_loss_steps": sum(run["nonfinite_loss_steps"] for run in runs),
            "first_nonfinite_steps": nan_steps,
            "seconds_per_run": statistics.mean(run["seconds"] for run in runs),
            "steps_done": [run["step"] for run in runs],
        })
    return rows


def first_step_below(val_mse: list[tuple[int, float]], threshold: float) -> int | None:
    """The first evaluated step whose validation MSE is below ``threshold``, if any."""
    return next((step for step, mse in val_mse if mse < threshold), None)


def format_mse(values: list[float | None]) -> str:
    """``low .. high`` of the final MSEs; ``NaN`` (in k runs) for runs without one (``None``)."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if len(finite) < len(values):
        return "NaN" if not finite else f"NaN in {len(values) - len(finite)}"
    low, high = min(finite), max(finite)
    return f"{low:.2g}" if low == high else f"{low:.2g} .. {high:.2g}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table printed by ``gradclip demo``."""
    header = (f"{'strategy':<11} {'final MSE (val)':>16} {'final<0.01':>10} "
              f"{'reached<0.01 (step)':>20} {'max grad norm':>13} {'non-finite loss':>18} "
              f"{'s/run':>6}")
    lines = [header, "-" * len(header)]
    for row in rows:
        nonfinite = str(row["nonfinite_loss_steps"])
        if row["first_nonfinite_steps"]:
            nonfinite += f" (step {','.join(map(str, row['first_nonfinite_steps']))})"
        reached = f"{len(row['reached_at'])}/{row['seeds']}"
        if row["reached_at"]:
            reached += f" ({statistics.median(row['reached_at']):.0f})"
        lines.append(
            f"{row['strategy']:<11} {format_mse(row['final_mse']):>16} "
            f"{str(row['learnt']) + '/' + str(row['seeds']):>10} {reached:>20} "
            f"{row['max_grad_norm']:>13.3g} {nonfinite:>18} {row['seconds_per_run']:>6.1f}")
    return "\n".join(lines)
