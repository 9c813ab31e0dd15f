"""PNG figures from gradient measurements and run directories (matplotlib, imported lazily).

- ``plot_profile``: histograms of what ``gradclip profile`` measured, with the thresholds;
- ``plot_run``: a run's loss, gradient norm with its threshold, and per-layer heat map;
- ``plot_compare``: the same three views over every run of ``gradclip compare``;
- ``plot_demo``: the demo's loss and gradient norm per strategy.

Norms span orders of magnitude, so every norm axis is logarithmic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError
from gradclip.app.training.rundir import read_metrics

SMOOTHING = 25  # steps in the loss's trailing moving average
# top of the demo's loss axis; exploding runs reach 1e30 and would flatten the rest
DEMO_LOSS_CEILING = 1e3


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; a clear error if it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'gradclip[app]'") from None
    return plt


def save_figure(figure: Any, path: Path, dpi: int) -> None:
    """Write the PNG; a file system refusal is one ``UserError`` line naming the path."""
    try:
        figure.savefig(path, dpi=dpi)
    except OSError as error:
        pyplot().close(figure)
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


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
        uses = [s for s in recommendation.specs if s.split("+")[-1].startswith("norm:")]
        axes[0].axvline(recommendation.norm_threshold, color="tab:red", linestyle="--",
                        label=f"norm {recommendation.norm_threshold:.2g}: "
                              f"{recommendation.norm_rule}"
                              f" ({'recommended: ' + uses[0] if uses else 'not recommended'})")
        axes[0].legend(fontsize=8)
    axes[0].set(xscale="log", xlabel="global L2 gradient norm per step (log scale)",
                ylabel="steps", title=f"global gradient norm over {len(global_norms)} steps")
    names = [name for name, values in module_norms.items() if positive(values)]
    if names:
        axes[1].boxplot([positive(module_norms[n]) for n in names], orientation="horizontal",
                        tick_labels=names, whis=(1, 99))
    axes[1].set(xscale="log", xlabel="gradient L2 norm per step (log scale)",
                title="per-module gradient norm (box: p25-p75, whiskers: p1-p99)")
    elements = positive(magnitudes)
    if elements:
        axes[2].hist(elements, bins=log_bins(elements), color="tab:green", alpha=0.8)
    if recommendation is not None and recommendation.value_threshold is not None:
        chosen = any(spec.startswith("value:") for spec in recommendation.specs)
        axes[2].axvline(recommendation.value_threshold, color="tab:red", linestyle="--",
                        label=f"value {recommendation.value_threshold:.2g}: "
                              f"{recommendation.value_rule}"
                              f" ({'recommended' if chosen else 'not recommended'})")
        axes[2].legend(fontsize=8)
    axes[2].set(xscale="log", xlabel="|gradient element| (log scale)", ylabel="sampled elements",
                title="per-element gradient magnitude")
    figure.suptitle("gradclip profile: gradients without clipping")
    save_figure(figure, path, 110)
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
    eval_steps: list[int] = field(default_factory=list)
    eval_scores: dict[str, list[float]] = field(default_factory=dict)


def read_curves(run_dir: Path, label: str = "") -> RunCurves:
    """The curves of one run directory."""
    curves = RunCurves(label or Path(run_dir).name)
    for record in read_metrics(run_dir):
        curves.steps.append(record["step"])
        curves.loss.append(number(record.get("loss")))
        curves.grad_norm.append(number(record.get("grad_norm")))
        curves.threshold.append(number(record.get("threshold")))
        scores = record.get("eval")
        if isinstance(scores, dict):  # --eval-every
            curves.eval_steps.append(record["step"])
            for name, value in scores.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    curves.eval_scores.setdefault(name, []).append(number(value))
        layers = record.get("layer_grad_norms")
        if layers:
            curves.layer_steps.append(record["step"])
            for name, norm in layers.items():
                curves.layer_norms.setdefault(name, []).append(number(norm))
    return curves


def draw_loss(axis: Any, runs: Sequence[RunCurves], colours: dict[str, str]) -> None:
    """Smoothed training loss per run; a run that went NaN/Inf ends in an x at the top.

    The y-axis stops at 100x the largest first-step loss, so that one diverging run does not
    flatten every other curve (its curve leaves the top of the panel).
    """
    starts = [run.loss[0] for run in runs if run.loss and math.isfinite(run.loss[0])]
    top = 100 * max(starts) if starts else None
    for run in runs:
        axis.plot(run.steps, moving_average(run.loss), color=colours.get(run.label),
                  alpha=0.8, linewidth=1, label=run.label)
    if top is not None:
        bottom = min((v for run in runs for v in moving_average(run.loss)
                      if math.isfinite(v) and v > 0), default=top / 1e6)
        axis.set_ylim(bottom / 1.5, top)
    for run in runs:
        if run.loss and not math.isfinite(run.loss[-1]) and top is not None:
            axis.plot(run.steps[-1], top, marker="x", markersize=9, clip_on=False,
                      color=colours.get(run.label))
    axis.set(yscale="log", xlabel="optimizer step",
             ylabel=f"training loss, mean of {SMOOTHING} steps (log)",
             title="training loss (x at the top: loss became NaN/Inf, run stopped)")


def draw_norms(axis: Any, runs: Sequence[RunCurves], colours: dict[str, str]) -> None:
    for run in runs:
        colour = colours.get(run.label)
        axis.plot(run.steps, run.grad_norm, color=colour, alpha=0.6, linewidth=0.7,
                  label=run.label)
        if finite(run.threshold):
            axis.plot(run.steps, run.threshold, color=colour, linestyle="--", linewidth=1.2,
                      label="clipping threshold" if len(runs) == 1 else None)
    axis.set(yscale="log", xlabel="optimizer step",
             ylabel="global grad L2 norm, before clipping (log)",
             title="gradient norm (dashed: clipping threshold)")


def log_grid(run: RunCurves) -> list[list[float]]:
    """log10 of each module's norm at each logged step (NaN where not finite or zero)."""
    return [[math.log10(v) if math.isfinite(v) and v > 0 else math.nan for v in norms]
            for norms in run.layer_norms.values()]


def draw_heat_map(axis: Any, run: RunCurves, limits: tuple[float, float] | None = None) -> Any:
    """Modules x logged steps, colour = log10 of the module's gradient norm; the image."""
    names = list(run.layer_norms)
    if not names:
        axis.text(0.5, 0.5, "no per-layer norms logged (--log-every 0)", ha="center",
                  transform=axis.transAxes)
        axis.set_axis_off()
        return None
    steps = run.layer_steps
    interval = steps[1] - steps[0] if len(steps) > 1 else steps[0]
    low, high = limits or (None, None)
    # each cell covers the steps since the previous log, ending at the logged step
    image = axis.imshow(log_grid(run), aspect="auto", interpolation="nearest", cmap="viridis",
                        vmin=low, vmax=high,
                        extent=(steps[0] - interval, steps[-1], len(names) - 0.5, -0.5))
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set(xlabel="optimizer step", title=f"per-layer gradient norm: {run.label}")
    return image


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
        save_figure(figure, run_dir / name, 110)
        plt.close(figure)
        paths.append(run_dir / name)
    figure, axis = plt.subplots(figsize=(9, 1.6 + 0.35 * max(1, len(curves.layer_norms))),
                                constrained_layout=True)
    image = draw_heat_map(axis, curves)
    if image is not None:
        figure.colorbar(image, ax=axis, label="log10 gradient L2 norm")
    save_figure(figure, run_dir / "layer_norms.png", 110)
    plt.close(figure)
    paths.append(run_dir / "layer_norms.png")
    if curves.eval_steps:
        paths.append(plot_validation(plt, run_dir, curves))
    return paths


def plot_validation(plt: Any, run_dir: Path, curves: RunCurves) -> Path:
    """``validation.png``: the validation scores recorded at ``--eval-every``."""
    names = [name for name in ("mean_roc_auc", "accuracy", "bits_per_char", "mse", "loss")
             if len(curves.eval_scores.get(name, ())) == len(curves.eval_steps)][:2]
    figure, axes = plt.subplots(1, len(names) or 1, figsize=(5.2 * max(1, len(names)), 3.6),
                                constrained_layout=True, squeeze=False)
    for axis, name in zip(axes[0], names, strict=False):
        axis.plot(curves.eval_steps, curves.eval_scores[name], marker="o", color="tab:green")
        axis.set(xlabel="optimizer step", ylabel=name, title=f"validation {name}")
    figure.suptitle(run_dir.name)
    save_figure(figure, run_dir / "validation.png", 110)
    plt.close(figure)
    return run_dir / "validation.png"


def panel_grid(plt: Any, count: int, width: float = 5.2, height: float = 3.6) -> tuple:
    """A figure with ``count`` panels, at most 4 per row; returns (figure, flat axes)."""
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                                constrained_layout=True, squeeze=False)
    flat = [axis for line in axes for axis in line]
    for axis in flat[count:]:
        axis.set_axis_off()
    return figure, flat[:count]


def clip_colours(plt: Any, clips: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {clip: cycle[i % len(cycle)] for i, clip in enumerate(dict.fromkeys(clips))}


def panel_title(setting: Any, labels: Sequence[str]) -> str:
    parts = {"model": setting.model, "seq_len": f"T={setting.seq_len}",
             "lr": f"lr={setting.lr:g}"}
    return " ".join(parts[key] for key in labels if key in parts) or "all runs"


def plot_compare(out: Path, grouped: dict[Any, list[dict[str, Any]]], labels: Sequence[str]
                 ) -> list[Path]:
    """``losses.png``, ``grad_norms.png``, ``layer_norms.png`` (and ``success.png``) in ``out``.

    One panel per setting other than the clip (model, length, learning rate), one colour per
    clip spec, one line per seed.
    """
    plt = pyplot()
    panels: dict[str, list[RunCurves]] = {}
    for setting, results in grouped.items():
        panel = panels.setdefault(panel_title(setting, labels), [])
        panel.extend(read_curves(Path(r["run_dir"]), setting.clip) for r in results)
    colours = clip_colours(plt, [s.clip for s in grouped])
    paths = []
    for name, draw in (("losses.png", draw_loss), ("grad_norms.png", draw_norms)):
        figure, axes = panel_grid(plt, len(panels))
        for axis, (title, runs) in zip(axes, panels.items(), strict=True):
            draw(axis, runs, colours)
            figure.suptitle(axis.get_title() + " (one line per seed)")
            axis.set_title(title, fontsize=10)
        handles = [plt.Line2D([], [], color=c, label=clip) for clip, c in colours.items()]
        figure.legend(handles=handles, title="--clip", loc="outside right upper", fontsize=8)
        save_figure(figure, out / name, 100)
        plt.close(figure)
        paths.append(out / name)
    paths.append(plot_layer_maps(plt, out, panels))
    seq_lens = {s.seq_len for s in grouped}
    if len(seq_lens) > 1:
        paths.append(plot_success(plt, out, grouped))
    return paths


def plot_layer_maps(plt: Any, out: Path, panels: dict[str, list[RunCurves]]) -> Path:
    """Per-layer heat maps of the first seed of each clip spec in the first panel."""
    title, runs = next(iter(panels.items()))
    firsts = list({run.label: run for run in reversed(runs)}.values())[::-1]
    figure, axes = plt.subplots(len(firsts), 1, squeeze=False, constrained_layout=True,
                                figsize=(9, 0.6 + (1.0 + 0.3 * max(
                                    1, len(firsts[0].layer_norms))) * len(firsts)))
    values = [v for run in firsts for line in log_grid(run) for v in line if math.isfinite(v)]
    limits = (min(values), max(values)) if values else None
    flat = [a for line in axes for a in line]
    images = [draw_heat_map(axis, run, limits) for axis, run in zip(flat, firsts, strict=True)]
    shown = [image for image in images if image is not None]
    if shown:
        figure.colorbar(shown[0], ax=flat, label="log10 gradient L2 norm (shared scale)")
    figure.suptitle(f"per-layer gradient norm (first seed), {title}")
    save_figure(figure, out / "layer_norms.png", 100)
    plt.close(figure)
    return out / "layer_norms.png"


def plot_success(plt: Any, out: Path, grouped: dict[Any, list[dict[str, Any]]]) -> Path:
    """Success rate and divergence rate against sequence length, per learning rate."""
    lrs = sorted({s.lr for s in grouped})
    figure, axes = panel_grid(plt, len(lrs), width=5.6, height=4.2)
    styles = ["-", "--", ":", "-."]
    models = list(dict.fromkeys(s.model for s in grouped))
    colours = clip_colours(plt, [s.clip for s in grouped])
    for axis, lr in zip(axes, lrs, strict=True):
        for model in models:
            for clip in colours:
                points = sorted((s.seq_len, results) for s, results in grouped.items()
                                if s.lr == lr and s.model == model and s.clip == clip)
                if not points:
                    continue
                rates = [100 * sum(bool(r["summary"].get("success")) for r in results)
                         / len(results) for _, results in points]
                axis.plot([t for t, _ in points], rates, marker="o", color=colours[clip],
                          linestyle=styles[models.index(model) % len(styles)],
                          label=f"{model} {clip}")
        axis.set(xscale="log", xlabel="sequence length T (log scale)", ylim=(-5, 105),
                 ylabel="runs that learnt the task (%)", title=f"lr={lr:g}")
        axis.minorticks_off()
        axis.set_xticks(sorted({s.seq_len for s in grouped}),
                        [str(t) for t in sorted({s.seq_len for s in grouped})])
    axes[0].legend(fontsize=8, title="model, --clip")
    figure.suptitle("success rate over seeds against sequence length")
    save_figure(figure, out / "success.png", 100)
    plt.close(figure)
    return out / "success.png"


def plot_demo(results: list[dict[str, Any]], strategies: tuple[str, ...], title: str,
              path: Path) -> Path:
    """Two panels (loss, gradient norm before clipping), one colour per strategy, all seeds."""
    plt = pyplot()
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
                loss_axis.plot(len(run["loss"]), DEMO_LOSS_CEILING / 3, marker="x", color=colour,
                               markersize=10, markeredgewidth=2)
    loss_axis.axhline(1 / 6, color="grey", linestyle=":", label="predict 1 always (MSE 1/6)")
    loss_axis.axhline(0.01, color="black", linestyle="--", linewidth=0.8,
                      label="success: MSE 0.01")
    loss_axis.set(yscale="log", ylim=(1e-4, DEMO_LOSS_CEILING), xlabel="optimizer step",
                  ylabel=f"training MSE, moving average over {SMOOTHING} steps (log scale)",
                  title=f"training loss (x: loss became NaN, run stopped; axis cut at "
                        f"{DEMO_LOSS_CEILING:g})")
    norm_axis.set(yscale="log", xlabel="optimizer step",
                  ylabel="global L2 gradient norm before clipping (log scale)",
                  title="gradient norm")
    loss_axis.legend(title="--clip", fontsize=8)
    norm_axis.legend(title="--clip", fontsize=8)
    figure.suptitle(title)
    save_figure(figure, path, 110)
    plt.close(figure)
    return path


def median_and_range(curves: Sequence[RunCurves]) -> tuple[list[int], list[float], list[float],
                                                            list[float]]:
    """Per step over the seeds: the median and the range of the smoothed loss (NaN dropped)."""
    length = max(len(run.steps) for run in curves)
    smoothed = [moving_average(run.loss) for run in curves]
    steps, middle, low, high = [], [], [], []
    for index in range(length):
        values = [line[index] for line in smoothed if index < len(line)
                  and math.isfinite(line[index])]
        if values:
            values.sort()
            steps.append(index + 1)
            middle.append(values[len(values) // 2])
            low.append(values[0])
            high.append(values[-1])
    return steps, middle, low, high


def plot_benchmark(out: Path, tasks: Sequence[Any]) -> list[Path]:
    """``losses.png`` (median and range over seeds), ``grad_norms.png`` (first seed, with
    thresholds) and ``ranks.png`` (strategy x task) of a benchmark, in ``out``."""
    plt = pyplot()
    colours = clip_colours(plt, [row["strategy"] for task in tasks for row in task.rows])
    paths = []
    figure, axes = panel_grid(plt, len(tasks))
    for axis, task in zip(axes, tasks, strict=True):
        starts = []
        for row in task.rows:
            curves = [read_curves(Path(folder)) for folder in row["run_dirs"]]
            curves = [run for run in curves if run.steps]
            if not curves:
                continue
            starts += [run.loss[0] for run in curves if math.isfinite(run.loss[0])]
            steps, middle, low, high = median_and_range(curves)
            colour = colours.get(row["strategy"])
            axis.plot(steps, middle, color=colour, linewidth=1, label=row["strategy"])
            axis.fill_between(steps, low, high, color=colour, alpha=0.15)
        axis.set(yscale="log", xlabel="optimizer step", title=task.setting.label,
                 ylabel=f"training loss, mean of {SMOOTHING} steps (log)")
        if starts:  # an exploding run would flatten the others: cut at 100x the start
            axis.set_ylim(top=100 * max(starts))
        axis.title.set_fontsize(9)
        axis.legend(fontsize=7)
    figure.suptitle("training loss: median over seeds, band = range over seeds")
    save_figure(figure, out / "losses.png", 100)
    plt.close(figure)
    paths.append(out / "losses.png")
    figure, axes = panel_grid(plt, len(tasks))
    for axis, task in zip(axes, tasks, strict=True):
        runs = [read_curves(Path(row["run_dirs"][0]), row["strategy"]) for row in task.rows]
        draw_norms(axis, [run for run in runs if run.steps], colours)
        axis.set_title(f"{task.setting.label} (seed 0)", fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle("gradient norm before clipping (dashed: each strategy's threshold)")
    save_figure(figure, out / "grad_norms.png", 100)
    plt.close(figure)
    paths.append(out / "grad_norms.png")
    paths.append(plot_ranks(plt, out, tasks))
    return paths


def plot_ranks(plt: Any, out: Path, tasks: Sequence[Any]) -> Path:
    """A heat map of each strategy's rank on each task (1 = best; blank: not run)."""
    names = list(dict.fromkeys(strategy_family(row["strategy"]) for task in tasks
                               for row in task.rows))
    grid = [[math.nan] * len(tasks) for _ in names]
    for column, task in enumerate(tasks):
        for row in task.rows:
            grid[names.index(strategy_family(row["strategy"]))][column] = row["rank"]
    figure, axis = plt.subplots(figsize=(2.2 + 1.6 * len(tasks), 1.2 + 0.4 * len(names)),
                                constrained_layout=True)
    image = axis.imshow(grid, cmap="viridis_r", aspect="auto")
    for r, line in enumerate(grid):
        for c, value in enumerate(line):
            if math.isfinite(value):
                axis.text(c, r, f"{value:.0f}", ha="center", va="center", color="white")
    axis.set_xticks(range(len(tasks)), [task.setting.options.name for task in tasks])
    axis.set_yticks(range(len(names)), names)
    figure.colorbar(image, ax=axis, label="rank on the task (1 = best)")
    axis.set_title("rank: fewest diverged runs, then best final metric")
    save_figure(figure, out / "ranks.png", 100)
    plt.close(figure)
    return out / "ranks.png"


def strategy_family(spec: str) -> str:
    """A spec without its task-specific threshold: ``norm:0.83`` -> ``norm:X``."""
    parts = []
    for member in spec.split("+"):
        name, _, value = member.partition(":")
        parts.append(name if not value else (f"{name}:X" if name in ("norm", "value")
                                             else member))
    return "+".join(parts)
