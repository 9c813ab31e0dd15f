"""PNG figures from gradient measurements and run directories (matplotlib, imported lazily).

- ``plot_profile``: histograms of what ``gradclip profile`` measured, with the thresholds;
- ``plot_run``: a run's loss, gradient norm with its threshold, and per-layer heat map;
- ``plot_compare``: the same three views over every run of ``gradclip compare``.

Norms span orders of magnitude, so every norm axis is logarithmic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradclip.app.run_dir import read_metrics

SMOOTHING = 25  # steps in the loss's trailing moving average


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; a clear error if it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'gradclip[app]'") from None
    return plt


def number(value: Any) -> float:
    """A metrics value as a float (``"nan"``/``"inf"`` strings and ``None`` included)."""
    return math.nan if value is None else float(value)


def finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def positive(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v) and v > 0]


def log_bins(values: Sequence[float], count: int = 40) -> list[float]:
    """``count`` bin edges evenly spaced in log10 over the positive values."""
    low, high = math.log10(min(values)), math.log10(max(values))
    high = high if high > low else low + 1
    return [10 ** (low + (high - low) * i / count) for i in range(count + 1)]


def moving_average(values: Sequence[float], window: int = SMOOTHING) -> list[float]:
    """Trailing mean over ``window`` steps (non-finite values stay visible as NaN)."""
    averages = []
    for index in range(len(values)):
        recent = values[max(0, index - window + 1):index + 1]
        averages.append(sum(recent) / len(recent))
    return averages


def plot_profile(global_norms: Sequence[float], module_norms: dict[str, Sequence[float]],
                 magnitudes: Sequence[float], recommendation: Any, path: Path) -> Path:
    """Three panels: global norm histogram, per-module norm spread, |g| histogram (log x)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    norms = positive(global_norms)
    if norms:
        axes[0].hist(norms, bins=log_bins(norms), color="tab:blue", alpha=0.8)
    if recommendation is not None:
        axes[0].axvline(recommendation.norm_threshold, color="tab:red", linestyle="--",
                        label=f"recommended norm:{recommendation.specs[0].split(':')[1]} "
                              f"(p{recommendation.percentile:g})")
        axes[0].legend(fontsize=8)
    axes[0].set(xscale="log", xlabel="global L2 gradient norm per step (log scale)",
                ylabel="steps", title=f"global gradient norm over {len(global_norms)} steps")
    names = [name for name, values in module_norms.items() if positive(values)]
    if names:
        axes[1].boxplot([positive(module_norms[n]) for n in names], vert=False,
                        tick_labels=names, whis=(1, 99))
    axes[1].set(xscale="log", xlabel="gradient L2 norm per step (log scale)",
                title="per-module gradient norm (box: p25-p75, whiskers: p1-p99)")
    elements = positive(magnitudes)
    if elements:
        axes[2].hist(elements, bins=log_bins(elements), color="tab:green", alpha=0.8)
    if recommendation is not None and recommendation.value_threshold is not None:
        axes[2].axvline(recommendation.value_threshold, color="tab:red", linestyle="--",
                        label=f"recommended value:{recommendation.specs[1].split(':')[1]} "
                              f"(p{recommendation.value_percentile:g})")
        axes[2].legend(fontsize=8)
    axes[2].set(xscale="log", xlabel="|gradient element| (log scale)", ylabel="sampled elements",
                title="per-element gradient magnitude")
    figure.suptitle("gradclip profile: gradients without clipping")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


@dataclass
class RunCurves:
    """A run's per-step curves from ``metrics.jsonl`` (floats; NaN where not finite)."""

    label: str
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    layer_steps: list[int] = field(default_factory=list)
    layer_norms: dict[str, list[float]] = field(default_factory=dict)


def read_curves(run_dir: Path, label: str = "") -> RunCurves:
    """The curves of one run directory."""
    curves = RunCurves(label or Path(run_dir).name)
    for record in read_metrics(run_dir):
        curves.steps.append(record["step"])
        curves.loss.append(number(record.get("loss")))
        curves.grad_norm.append(number(record.get("grad_norm")))
        curves.threshold.append(number(record.get("threshold")))
        layers = record.get("layer_grad_norms")
        if layers:
            curves.layer_steps.append(record["step"])
            for name, norm in layers.items():
                curves.layer_norms.setdefault(name, []).append(number(norm))
    return curves


def draw_loss(axis: Any, runs: Sequence[RunCurves], colours: dict[str, str]) -> None:
    for run in runs:
        axis.plot(run.steps, moving_average(run.loss), color=colours.get(run.label),
                  alpha=0.8, linewidth=1, label=run.label)
        if run.loss and not math.isfinite(run.loss[-1]):
            axis.plot(run.steps[-1], min(finite(run.loss) or [1.0]), marker="x", markersize=9,
                      color=colours.get(run.label))
    axis.set(yscale="log", xlabel="optimizer step",
             ylabel=f"training loss, mean of last {SMOOTHING} steps (log scale)",
             title="training loss (x: loss became NaN/Inf, run stopped)")


def draw_norms(axis: Any, runs: Sequence[RunCurves], colours: dict[str, str]) -> None:
    for run in runs:
        colour = colours.get(run.label)
        axis.plot(run.steps, run.grad_norm, color=colour, alpha=0.6, linewidth=0.7,
                  label=run.label)
        if finite(run.threshold):
            axis.plot(run.steps, run.threshold, color=colour, linestyle="--", linewidth=1.2,
                      label="clipping threshold" if len(runs) == 1 else None)
    axis.set(yscale="log", xlabel="optimizer step",
             ylabel="global L2 gradient norm before clipping (log scale)",
             title="gradient norm (dashed: clipping threshold)")


def draw_heat_map(axis: Any, figure: Any, run: RunCurves) -> None:
    """Modules x logged steps, colour = log10 of the module's gradient norm."""
    names = list(run.layer_norms)
    if not names:
        axis.text(0.5, 0.5, "no per-layer norms logged (--log-every 0)", ha="center",
                  transform=axis.transAxes)
        axis.set_axis_off()
        return
    grid = [[math.log10(v) if math.isfinite(v) and v > 0 else math.nan
             for v in run.layer_norms[name]] for name in names]
    steps = run.layer_steps
    image = axis.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(names) - 0.5, -0.5))
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set(xlabel="optimizer step", title=f"per-layer gradient norm: {run.label}")
    figure.colorbar(image, ax=axis, label="log10 gradient L2 norm")


def plot_run(run_dir: Path) -> list[Path]:
    """``loss.png``, ``grad_norm.png`` and ``layer_norms.png`` in ``run_dir``."""
    plt = pyplot()
    run_dir = Path(run_dir)
    curves = read_curves(run_dir)
    if not curves.steps:
        return []
    paths = []
    for name, draw in (("loss.png", draw_loss), ("grad_norm.png", draw_norms)):
        figure, axis = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
        draw(axis, [curves], {curves.label: "tab:blue"})
        axis.legend(fontsize=8)
        figure.suptitle(run_dir.name)
        figure.savefig(run_dir / name, dpi=110)
        plt.close(figure)
        paths.append(run_dir / name)
    figure, axis = plt.subplots(figsize=(9, 1.6 + 0.35 * max(1, len(curves.layer_norms))),
                                constrained_layout=True)
    draw_heat_map(axis, figure, curves)
    figure.savefig(run_dir / "layer_norms.png", dpi=110)
    plt.close(figure)
    return [*paths, run_dir / "layer_norms.png"]
