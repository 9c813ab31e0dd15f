"""The benchmark's figures, drawn from its ``results.json`` alone.

- ``sweep.png``: the final score against the learning rate, one line per strategy with its
  bootstrap 95 % band, log x axis: the key figure of Wortsman et al. (2023);
- ``losses.png``: training-loss curves at the highest rate where some strategy stays stable;
- ``spikes.png``: loss spikes per run, per strategy and rate.

One panel per task; one colour per strategy in every figure; legends outside the data.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradclip.app.experiments.layout import (
    axis_labels,
    figure_title,
    legend_below,
    line_handles,
    panel_figure,
    panel_title,
    pyplot,
    save_figure,
)
from gradclip.app.experiments.palette import strategy_colours


def strategies_of(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(e["strategy"] for e in results["sweep"]))


def plot_all(out: Path, results: dict[str, Any]) -> list[Path]:
    """Every figure of the report, written into ``out``; their paths."""
    plt = pyplot()
    colours = strategy_colours(strategies_of(results))
    return [draw(plt, out / name, results, colours) for name, draw in
            (("sweep.png", draw_sweep), ("losses.png", draw_losses),
             ("spikes.png", draw_spikes))]


def finish(plt: Any, figure: Any, colours: dict[str, str], path: Path, title: str) -> Path:
    figure_title(figure, title)
    legend_below(figure, line_handles(colours), title="strategy")
    save_figure(figure, path, 100)
    plt.close(figure)
    return path


def by_rate(results: dict[str, Any], task: dict[str, Any], strategy: str) -> list[dict[str, Any]]:
    """The sweep entries of one strategy on one task, lowest rate first."""
    return sorted((e for e in results["sweep"] if e["task"] == task["task"]
                   and e["strategy"] == strategy), key=lambda e: e["lr"])


def rate_axis(axis: Any, lrs: Sequence[float]) -> None:
    """A log x axis labelled at the grid's own rates (``0.03``, ``0.1``), no minor labels.

    Matplotlib labels minor ticks on a log axis spanning under a decade, and those labels
    (``3 x 10^-2``, ``4 x 10^-2``) run into each other on a narrow panel.
    """
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    axis.set_xscale("log")
    axis.xaxis.set_major_locator(FixedLocator(sorted(set(lrs))))
    axis.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_minor_formatter(NullFormatter())


def task_rates(results: dict[str, Any], task: dict[str, Any]) -> list[float]:
    return [e["lr"] for e in results["sweep"] if e["task"] == task["task"]]


def draw_sweep(plt: Any, path: Path, results: dict[str, Any], colours: dict[str, Any]) -> Path:
    """Final score against learning rate per task, one line and band per strategy."""
    figure, axes = panel_figure(len(results["tasks"]))
    for axis, task in zip(axes, results["tasks"], strict=True):
        for strategy in strategies_of(results):
            entries = by_rate(results, task, strategy)
            if not entries:
                continue
            lrs = [e["lr"] for e in entries]
            axis.plot(lrs, [e["metric_mean"] for e in entries], marker="o", markersize=3,
                      color=colours[strategy], label=strategy, linewidth=1.2)
            axis.fill_between(lrs, [e["metric_ci95"][0] for e in entries],
                              [e["metric_ci95"][1] for e in entries], color=colours[strategy],
                              alpha=0.12, linewidth=0)
        axis.axhline(task["initial_metric"], color="0.5", linestyle=":", linewidth=1)
        axis.set_ylim(*data_range(results, task))
        direction = "higher" if task["higher_is_better"] else "lower"
        rate_axis(axis, task_rates(results, task))
        axis_labels(axis, "learning rate (log)", f"final {task['metric']} ({direction} is better)")
        panel_title(axis, task["task"])
    return finish(plt, figure, colours, path, "final score against learning rate: mean over "
                  "seeds, band = bootstrap 95 % interval; dotted = untrained")


def data_range(results: dict[str, Any], task: dict[str, Any]) -> tuple[float, float]:
    """The y range of a task's means and bands, padded by 5 %: the untrained line is shown
    only where some band reaches it, so a far-off line does not flatten the curves."""
    values = [v for e in results["sweep"] if e["task"] == task["task"]
              for v in (e["metric_mean"], *e["metric_ci95"]) if math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    return low - pad, high + pad


def stable_rate(results: dict[str, Any], task: dict[str, Any]) -> float | None:
    """The highest rate at which some strategy had no diverged run."""
    rates = [e["lr"] for e in results["sweep"] if e["task"] == task["task"]
             and e["diverged"] == 0]
    return max(rates) if rates else None


def draw_losses(plt: Any, path: Path, results: dict[str, Any], colours: dict[str, Any]) -> Path:
    """Median training-loss curve over the scoring seeds at the highest stable rate."""
    figure, axes = panel_figure(len(results["tasks"]))
    for axis, task in zip(axes, results["tasks"], strict=True):
        lr = stable_rate(results, task)
        for strategy in strategies_of(results):
            curves = [r["curve"] for r in results["records"] if r["stage"] == "scoring"
                      and r["task"] == task["task"] and r["strategy"] == strategy
                      and r["lr"] == lr and r.get("curve")]
            if curves:
                steps, median = median_curve(curves)
                axis.plot(steps, median, color=colours[strategy], label=strategy, linewidth=1)
        title = task["task"] if lr is None else f"{task['task']}, lr {lr:g}"
        axis.set_yscale("log")
        axis_labels(axis, "optimizer step", "training loss (log)")
        panel_title(axis, title)
    return finish(plt, figure, colours, path, "training loss at the highest rate where some "
                  "strategy stays stable (median over seeds)")


def median_curve(curves: Sequence[Sequence[Sequence[float]]]) -> tuple[list[float], list[float]]:
    """The per-point median of curves sampled at the same steps (non-finite points dropped)."""
    longest = max(curves, key=len)
    steps, middle = [], []
    for index in range(len(longest)):
        values = [c[index][1] for c in curves if index < len(c) and math.isfinite(c[index][1])]
        if values:
            steps.append(longest[index][0])
            middle.append(statistics.median(values))
    return steps, middle


def draw_spikes(plt: Any, path: Path, results: dict[str, Any], colours: dict[str, Any]) -> Path:
    """Mean loss spikes per run against learning rate, one line per strategy."""
    figure, axes = panel_figure(len(results["tasks"]))
    for axis, task in zip(axes, results["tasks"], strict=True):
        for strategy in strategies_of(results):
            entries = by_rate(results, task, strategy)
            if entries:
                axis.plot([e["lr"] for e in entries], [e["spikes_mean"] for e in entries],
                          marker="o", markersize=3, color=colours[strategy], label=strategy,
                          linewidth=1)
        rate_axis(axis, task_rates(results, task))
        axis_labels(axis, "learning rate (log)", "loss spikes per run")
        panel_title(axis, task["task"])
    return finish(plt, figure, colours, path, f"loss spikes per run (median + "
                  f"{results['spike_k']:g} x MAD of the previous {results['spike_window']} "
                  "steps), mean over seeds")
