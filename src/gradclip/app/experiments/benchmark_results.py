"""The benchmark's ``results.json``: sweep entries, sensitivities, rank groups and claims.

Built from the run records of ``gradclip.app.experiments.benchmark.run_record``:

- one **sweep** entry per (task, strategy, learning rate): ``task``, ``strategy``, ``lr``,
  ``seeds``, ``diverged``, ``metric_mean`` (mean capped score over the scoring seeds),
  ``metric_ci95`` (bootstrap), ``spikes_mean``, and the variant chosen (``spec``);
- one **sensitivity** entry per (task, strategy): ``lr_sensitivity`` (Wortsman et al. 2023)
  with its bootstrap interval, the best rate and its score, the rank group;
- the **claims** (``gradclip.app.experiments.claims``).

The report and every figure are made from this file alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from gradclip.app.experiments.claims import evaluate_all
from gradclip.app.experiments.sweep_stats import (
    SPIKE_K,
    SPIKE_WINDOW,
    bootstrap_ci,
    bootstrap_interval,
    lr_sensitivity,
    rank_groups,
    scores_of,
)

SENSITIVITY_FORMULA = (
    "LR sensitivity = mean over the rates of |S(lr) - S*|, where S(lr) is the strategy's mean "
    "final metric over the scoring seeds at that rate, each run's metric capped at the "
    "untrained model's (a diverged run scores exactly that), and S* is the best S any "
    "strategy reached at any rate of the task (Wortsman et al. 2023)")
SPIKE_RULE = (f"a step whose training loss exceeds median + {SPIKE_K:g} x MAD of the previous "
              f"{SPIKE_WINDOW} steps' losses (at least 10 of them), or is not finite")


def sweep_entries(records: Sequence[dict[str, Any]], task: dict[str, Any],
                  strategies: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per (strategy, rate) of ``task`` that has scoring runs."""
    entries = []
    for strategy in strategies:
        for lr in task["lrs"]:
            runs = [r for r in records if r["stage"] == "scoring" and r["task"] == task["task"]
                    and r["strategy"] == strategy and r["lr"] == lr]
            if not runs:
                continue
            scores = [r["score"] for r in runs]
            spikes = [float(r["spikes"]) for r in runs]
            entries.append({
                "task": task["task"], "strategy": strategy, "lr": lr, "spec": runs[0]["spec"],
                "seeds": [r["seed"] for r in runs], "diverged": sum(r["diverged"] for r in runs),
                "metric_mean": statistics.fmean(scores),
                "metric_ci95": list(bootstrap_ci(scores)),
                "spikes_mean": statistics.fmean(spikes),
                "spikes_ci95": list(bootstrap_ci(spikes)),
                "clipped_share": statistics.fmean(
                    (r["clipped_steps"] or 0) / max(1, r["steps"]) for r in runs),
            })
    return entries


def sensitivity_entries(records: Sequence[dict[str, Any]], task: dict[str, Any],
                        sweep: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per strategy of ``task``: sensitivity (with interval), best rate, rank group."""
    higher = task["higher_is_better"]
    pick = max if higher else min
    mine = [e for e in sweep if e["task"] == task["task"]]
    if not mine:
        return []
    best = pick(e["metric_mean"] for e in mine)
    entries = []
    for strategy in dict.fromkeys(e["strategy"] for e in mine):
        rows = [e for e in mine if e["strategy"] == strategy]
        samples = [scores_of(records, task["task"], strategy, e["lr"]) for e in rows]
        top = pick(rows, key=lambda e: e["metric_mean"])
        entries.append({
            "task": task["task"], "strategy": strategy,
            "lr_sensitivity": lr_sensitivity([e["metric_mean"] for e in rows], best, higher),
            "lr_sensitivity_ci95": list(bootstrap_interval(
                samples, lambda drawn: lr_sensitivity(
                    [statistics.fmean(d) for d in drawn], best, higher))),
            "rates": len(rows), "best_lr": top["lr"], "best_metric": top["metric_mean"],
            "best_metric_ci95": top["metric_ci95"],
            "diverged": sum(e["diverged"] for e in rows),
            "runs": sum(len(e["seeds"]) for e in rows),
            "spikes_mean": statistics.fmean(e["spikes_mean"] for e in rows),
        })
    groups = rank_groups({e["strategy"]: e["lr_sensitivity"] for e in entries},
                         {e["strategy"]: tuple(e["lr_sensitivity_ci95"]) for e in entries},
                         higher_is_better=False)
    for entry in entries:
        entry["rank_group"] = groups[entry["strategy"]]
    return entries


def separated(sensitivity: Sequence[dict[str, Any]]) -> bool:
    """Whether the rank groups separate anything (some strategy outside the first group)."""
    return any(e["rank_group"] > 1 for e in sensitivity)


def build(records: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]],
          strategies: Sequence[str], **header: Any) -> dict[str, Any]:
    """The whole ``results.json``: ``header`` (suite, seeds, command, ...), the tasks, every
    run, the sweep and sensitivity entries, the claims."""
    sweep = [e for task in tasks for e in sweep_entries(records, task, strategies)]
    sensitivity = [e for task in tasks for e in sensitivity_entries(records, task, sweep)]
    return {**header, "sensitivity_formula": SENSITIVITY_FORMULA, "spike_rule": SPIKE_RULE,
            "spike_window": SPIKE_WINDOW, "spike_k": SPIKE_K,
            "runs": len(records),
            "selection_runs": sum(r["stage"] == "selection" for r in records),
            "tasks": list(tasks), "sweep": sweep, "sensitivity": sensitivity,
            "claims": evaluate_all(records, tasks, sweep), "records": list(records)}
