"""The default demonstration: a vanilla RNN on the adding problem, trained several ways.

Setting (measured to explode without clipping): adding problem at T=10, ``nn.RNN`` tanh with
64 hidden units, SGD lr 0.15 momentum 0.9, batch 64, 4,000 steps, 3 seeds. Each
(strategy, seed) pair is a normal ``gradclip train`` run in its own sub-folder of the demo
directory; a run whose loss turns non-finite stops there (its weights are NaN).
"""

from __future__ import annotations

import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradclip.app.loop import Trainer
from gradclip.app.run_dir import CONFIG, read_metrics, write_json
from gradclip.app.tasks.adding import AddingTask

STRATEGIES = ("none", "norm:1.0", "value:0.5", "value:0.01")
SEQ_LEN, HIDDEN, LR, MOMENTUM, BATCH = 10, 64, 0.15, 0.9, 64

EXPLANATION = """\
How to read this: without clipping, one exploding gradient (norms in the thousands) throws the
weights to NaN within the first steps. Clipping the global norm to 1.0 keeps every update
small whatever the gradient did, and the RNN learns the task. Clipping each gradient *value*
is not the same thing: value:0.5 bounds each of the ~4,400 entries, not their norm, so an
update can still be sqrt(4400) * 0.5 = 33 long and training stays finite but diverges, while
value:0.01 is tight enough to learn. A value threshold depends on the model's size; a norm
threshold does not."""


@dataclass(frozen=True)
class DemoRun:
    """One (strategy, seed) run of the demo."""

    strategy: str
    seed: int
    steps: int
    run_dir: Path


def demo_config(run: DemoRun) -> dict[str, Any]:
    """The ``config.json`` of one demo run (the measured setting above)."""
    task = AddingTask(SEQ_LEN, BATCH, run.seed)
    return {
        "task": task.config(),
        "model": {"cell": "rnn", "hidden_size": HIDDEN, "layers": 1, "bidirectional": False,
                  "dropout": 0.0, "embed_dim": 128},
        "train": {"clip": run.strategy, "nonfinite": "propagate", "optimizer": "sgd",
                  "lr": LR, "momentum": MOMENTUM, "weight_decay": 0.0, "schedule": "constant",
                  "total_steps": run.steps, "epochs": None, "batch_size": BATCH,
                  "accumulate": 1, "amp": "none", "seed": run.seed, "device": "cpu",
                  "threads": 1, "log_every": 0, "eval_every": 0, "checkpoint_every": 0},
    }


def train_one(run: DemoRun) -> dict[str, Any]:
    """Train one demo run; returns its summary plus its per-step loss and gradient norm."""
    config = demo_config(run)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run.run_dir / CONFIG, config)
    task = AddingTask(SEQ_LEN, BATCH, run.seed)
    summary = Trainer(run.run_dir, config, task).train(progress=False)
    records = read_metrics(run.run_dir)
    return {"strategy": run.strategy, "seed": run.seed, "summary": summary,
            "loss": [float(record["loss"]) for record in records],
            "grad_norm": [float(record["grad_norm"]) for record in records]}


def run_demo(out: Path, steps: int, seeds: int, strategies: tuple[str, ...], workers: int
             ) -> list[dict[str, Any]]:
    """Every (strategy, seed) run, ``workers`` processes at a time, in a stable order."""
    runs = [DemoRun(strategy, seed, steps, out / f"{safe_name(strategy)}-seed{seed}")
            for strategy in strategies for seed in range(seeds)]
    if workers <= 1:
        return [train_one(run) for run in runs]
    with ProcessPoolExecutor(max_workers=workers, initializer=one_thread) as pool:
        return list(pool.map(train_one, runs))


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
        runs = [result["summary"] for result in results if result["strategy"] == strategy]
        mses = [run["eval"]["mse"] for run in runs]
        nan_steps = [run["first_nonfinite_step"] for run in runs
                     if run["first_nonfinite_step"] is not None]
        rows.append({
            "strategy": strategy, "seeds": len(runs),
            "final_mse": mses, "learnt": sum(bool(run["success"]) for run in runs),
            "max_grad_norm": max(run["max_grad_norm"] for run in runs),
            "nonfinite_loss_steps": sum(run["nonfinite_loss_steps"] for run in runs),
            "first_nonfinite_steps": nan_steps,
            "seconds_per_run": statistics.mean(run["seconds"] for run in runs),
            "steps_done": [run["step"] for run in runs],
        })
    return rows


def format_mse(values: list[float]) -> str:
    finite = [value for value in values if value == value and abs(value) != float("inf")]
    if len(finite) < len(values):
        return "NaN" if not finite else f"NaN in {len(values) - len(finite)}"
    low, high = min(finite), max(finite)
    return f"{low:.2g}" if low == high else f"{low:.2g} .. {high:.2g}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table printed by ``gradclip demo``."""
    header = (f"{'strategy':<11} {'final MSE (val)':>16} {'learnt':>7} {'max grad norm':>14} "
              f"{'non-finite loss':>16} {'s/run':>6}")
    lines = [header, "-" * len(header)]
    for row in rows:
        nonfinite = str(row["nonfinite_loss_steps"])
        if row["first_nonfinite_steps"]:
            nonfinite += f" (step {','.join(map(str, row['first_nonfinite_steps']))})"
        lines.append(
            f"{row['strategy']:<11} {format_mse(row['final_mse']):>16} "
            f"{row['learnt']}/{row['seeds']:<5} {row['max_grad_norm']:>14.3g} "
            f"{nonfinite:>16} {row['seconds_per_run']:>6.1f}")
    return "\n".join(lines)
