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

from gradclip.app.experiments.plots import pyplot, save_figure

# TEMPORARY until the shared palette lands
_COLOURS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
            "#CC79A7"]


def colour_map(names: Sequence[str]) -> dict[str, Any]:
    return {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}


def panel_figure(plt: Any, panels: int) -> tuple[Any, list[Any]]:
    columns = min(panels, 2)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns + 2, 3.8 * rows),
                                squeeze=False, layout="constrained")
    flat = [a for row in axes for a in row]
    for extra in flat[panels:]:
        extra.remove()
    return figure, flat[:panels]


def legend_outside(figure: Any, axes: Sequence[Any]) -> None:
    handles, labels = {}, []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    figure.legend([handles[label] for label in labels], labels, loc="outside right upper")


def strategies_of(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(e["strategy"] for e in results["sweep"]))


def plot_all(out: Path, results: dict[str, Any]) -> list[Path]:
    """Every figure of the report, written into ``out``; their paths."""
    plt = pyplot()
    colours = colour_map(strategies_of(results))
    return [draw(plt, out / name, results, colours) for name, draw in
            (("sweep.png", draw_sweep), ("losses.png", draw_losses),
             ("spikes.png", draw_spikes))]


def finish(plt: Any, figure: Any, axes: Sequence[Any], path: Path, title: str) -> Path:
    figure.suptitle(title)
    legend_outside(figure, axes)
    save_figure(figure, path, 100)
    plt.close(figure)
    return path


def draw_sweep(plt: Any, path: Path, results: dict[str, Any], colours: dict[str, Any]) -> Path:
    """Final score against learning rate per task, one line and band per strategy."""
    figure, axes = panel_figure(plt, len(results["tasks"]))
    for axis, task in zip(axes, results["tasks"], strict=True):
        for strategy in strategies_of(results):
            entries = sorted((e for e in results["sweep"] if e["task"] == task["task"]
                              and e["strategy"] == strategy), key=lambda e: e["lr"])
            if not entries:
                continue
            lrs = [e["lr"] for e in entries]
            axis.plot(lrs, [e["metric_mean"] for e in entries], marker="o", markersize=3,
                      color=colours[strategy], label=strategy, linewidth=1.2)
            axis.fill_between(lrs, [e["metric_ci95"][0] for e in entries],
                              [e["metric_ci95"][1] for e in entries], color=colours[strategy],
                              alpha=0.12, linewidth=0)
        axis.axhline(task["initial_metric"], color="0.5", linestyle=":", linewidth=1)
        axis.set(xscale="log", xlabel="learning rate (log)", title=task["task"],
                 ylabel=f"final {task['metric']} ({'higher' if task['higher_is_better'] else 'lower'} is better)")
    return finish(plt, figure, axes, path, "final score against learning rate: mean over "
                  "seeds, band = bootstrap 95 % interval; dotted = untrained")


def stable_rate(results: dict[str, Any], task: dict[str, Any]) -> float | None:
    """The highest rate at which some strategy had no diverged run."""
    rates = [e["lr"] for e in results["sweep"] if e["task"] == task["task"]
             and e["diverged"] == 0]
    return max(rates) if rates else None


def draw_losses(plt: Any, path: Path, results: dict[str, Any], colours: dict[str, Any]) -> Path:
    """Median training-loss curve over the scoring seeds at the highest stable rate."""
    figure, axes = panel_figure(plt, len(results["tasks"]))
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
        axis.set(yscale="log", xlabel="optimizer step", ylabel="training loss (log)",
                 title=title)
    return finish(plt, figure, axes, path, "training loss at the highest rate where some "
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
    figure, axes = panel_figure(plt, len(results["tasks"]))
    for axis, task in zip(axes, results["tasks"], strict=True):
        for strategy in strategies_of(results):
            entries = sorted((e for e in results["sweep"] if e["task"] == task["task"]
                              and e["strategy"] == strategy), key=lambda e: e["lr"])
            if entries:
                axis.plot([e["lr"] for e in entries], [e["spikes_mean"] for e in entries],
                          marker="o", markersize=3, color=colours[strategy], label=strategy,
                          linewidth=1)
        axis.set(xscale="log", xlabel="learning rate (log)", ylabel="loss spikes per run",
                 title=task["task"])
    return finish(plt, figure, axes, path, f"loss spikes per run (median + "
                  f"{results['spike_k']:g} x MAD of the previous {results['spike_window']} "
                  "steps), mean over seeds")
