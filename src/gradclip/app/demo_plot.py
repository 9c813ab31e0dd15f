"""The demo's figure: training loss and gradient norm per strategy, log scale."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SMOOTHING = 25  # steps in the loss's moving average
LOSS_CEILING = 1e3  # top of the loss axis; exploding runs reach 1e30 and would flatten the rest


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` steps (NaN once a NaN enters the window)."""
    averages, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averages.append(total / min(index + 1, window))
        if math.isnan(value):
            return averages
    return averages


def plot_demo(results: list[dict[str, Any]], strategies: tuple[str, ...], title: str,
              path: Path) -> Path:
    """Two panels (loss, gradient norm before clipping), one colour per strategy, all seeds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the demo plot needs matplotlib: pip install 'gradclip[app]'") from None
    figure, (loss_axis, norm_axis) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, strategy in zip(colours, strategies, strict=False):
        runs = [result for result in results if result["strategy"] == strategy]
        for index, run in enumerate(runs):
            label = strategy if index == 0 else None
            steps = range(1, len(run["loss"]) + 1)
            loss_axis.plot(steps, moving_average(run["loss"], SMOOTHING), color=colour,
                           alpha=0.8, linewidth=1, label=label)
            norm_axis.plot(steps, run["grad_norm"], color=colour, alpha=0.5, linewidth=0.6,
                           label=label)
            if not math.isfinite(run["loss"][-1]):
                loss_axis.plot(len(run["loss"]), LOSS_CEILING / 3, marker="x", color=colour,
                               markersize=10, markeredgewidth=2)
    loss_axis.axhline(1 / 6, color="grey", linestyle=":", label="predict 1 always (MSE 1/6)")
    loss_axis.axhline(0.01, color="black", linestyle="--", linewidth=0.8,
                      label="success: MSE 0.01")
    loss_axis.set(yscale="log", ylim=(1e-4, LOSS_CEILING), xlabel="optimizer step",
                  ylabel=f"training MSE, moving average over {SMOOTHING} steps (log scale)",
                  title=f"training loss (x: loss became NaN, run stopped; axis cut at "
                        f"{LOSS_CEILING:g})")
    norm_axis.set(yscale="log", xlabel="optimizer step",
                  ylabel="global L2 gradient norm before clipping (log scale)",
                  title="gradient norm")
    loss_axis.legend(title="--clip", fontsize=8)
    norm_axis.legend(title="--clip", fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
