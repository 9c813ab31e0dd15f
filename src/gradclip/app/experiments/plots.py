"""PNG figures from gradient measurements and run directories (matplotlib, imported lazily).

- ``plot_profile``: histograms of what ``gradclip profile`` measured, with the thresholds;
- ``plot_run``: a run's loss, gradient norm with its threshold, and per-layer heat map;
- ``plot_compare``: the same three views over every run of ``gradclip compare``;
- ``plot_demo``: the demo's loss and gradient norm per strategy;

Norms span orders of magnitude, so every norm axis is logarithmic. Every figure takes its
strategy colours from ``palette`` (one colour per strategy, the same in every figure) and its
size, titles and legend placement from ``layout`` (legends below the panels, never on the data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradclip.app.experiments.layout import (
    axis_labels,
    figure_title,
    legend_below,
    line_handles,
    log_y,
    panel_figure,
    panel_title,
    pyplot,
    save_figure,
)
from gradclip.app.experiments.palette import strategy_colours
from gradclip.app.training.metrics_log import number, read_metrics
from gradclip.app.training.rundir import CONFIG
from gradclip.app.untrusted import read_json

SMOOTHING = 25  # steps in the loss's trailing moving average
# top of the demo's loss axis; exploding runs reach 1e30 and would flatten the rest
DEMO_LOSS_CEILING = 1e3


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


def plot_profile(global_norms: Sequence[float], module_norms: Mapping[str, Sequence[float]],
                 magnitudes: Sequence[float], recommendation: Any, path: Path) -> Path:
    """Three panels: global norm histogram, per-module norm spread, |g| histogram (log x).

    The recommended thresholds are dashed lines, listed in one legend below the panels.
    """
    figure, axes = panel_figure(3, width=5.4, height=4.2)
    norms = positive(global_norms)
    if norms:
        axes[0].hist(norms, bins=log_bins(norms), color="tab:blue", alpha=0.8)
    if recommendation is not None:
        uses = [s for s in recommendation.specs if s.split("+")[-1].startswith("norm:")]
        axes[0].axvline(recommendation.norm_threshold, color="tab:red", linestyle="--",
                        label=f"norm threshold {recommendation.norm_threshold:.2g} (left): "
                              f"{recommendation.norm_rule}"
                              f" ({'recommended: ' + uses[0] if uses else 'not recommended'})")
    axes[0].set(xscale="log")
    axis_labels(axes[0], "global L2 gradient norm per step (log scale)", "steps")
    panel_title(axes[0], f"global gradient norm over {len(global_norms)} steps")
    names = [name for name, values in module_norms.items() if positive(values)]
    if names:
        axes[1].boxplot([positive(module_norms[n]) for n in names], orientation="horizontal",
                        tick_labels=names, whis=(1, 99))
    axes[1].set(xscale="log")
    axis_labels(axes[1], "gradient L2 norm per step (log scale)", "")
    panel_title(axes[1], "per-module gradient norm (box: p25-p75, whiskers: p1-p99)")
    elements = positive(magnitudes)
    if elements:
        axes[2].hist(elements, bins=log_bins(elements), color="tab:green", alpha=0.8)
    if recommendation is not None and recommendation.value_threshold is not None:
        chosen = any(spec.startswith("value:") for spec in recommendation.specs)
        axes[2].axvline(recommendation.value_threshold, color="tab:purple", linestyle="--",
                        label=f"value threshold {recommendation.value_threshold:.2g} (right): "
                              f"{recommendation.value_rule}"
                              f" ({'recommended' if chosen else 'not recommended'})")
    axes[2].set(xscale="log")
    axis_labels(axes[2], "|gradient element| (log scale)", "sampled elements")
    panel_title(axes[2], "per-element gradient magnitude")
    legend_below(figure, [line for axis in axes for line in axis.get_lines()
                          if not line.get_label().startswith("_")])
    figure_title(figure, "gradclip profile: gradients without clipping")
    save_figure(figure, path, 110)
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
    flatten every other curve (its curve leaves the top of the panel); when no run stopped
    and none rose that far, it stops just above the highest curve.
    """
    starts = [run.loss[0] for run in runs if run.loss and math.isfinite(run.loss[0])]
    curves = [moving_average(run.loss) for run in runs]
    shown = [v for curve in curves for v in curve if math.isfinite(v) and v > 0]
    stopped = [run for run in runs if run.loss and not math.isfinite(run.loss[-1])]
    top = 100 * max(starts) if starts else None
    if top is not None and shown and not stopped:
        top = min(top, 1.5 * max(shown))
    for run, curve in zip(runs, curves, strict=True):
        axis.plot(run.steps, curve, color=colours.get(run.label), alpha=0.8, linewidth=1,
                  label=run.label)
    if top is not None:
        axis.set_ylim(min(shown, default=top / 1e6) / 1.5, top)
        for run in stopped:
            axis.plot(run.steps[-1], top, marker="x", markersize=9, clip_on=False,
                      color=colours.get(run.label))
    log_y(axis)
    axis_labels(axis, "optimizer step", f"training loss, mean of {SMOOTHING} steps (log)")


LOSS_TITLE = "training loss (x at the top: loss became NaN/Inf, run stopped)"
NORMS_TITLE = "gradient norm before clipping (dashed: clipping threshold)"


def draw_norms(axis: Any, runs: Sequence[RunCurves], colours: dict[str, str]) -> None:
    """Each run's global gradient norm before clipping, and its threshold dashed."""
    for run in runs:
        colour = colours.get(run.label)
        axis.plot(run.steps, run.grad_norm, color=colour, alpha=0.6, linewidth=0.7,
                  label=run.label)
        if finite(run.threshold):
            axis.plot(run.steps, run.threshold, color=colour, linestyle="--", linewidth=1.2,
                      label="clipping threshold" if len(runs) == 1 else None)
    log_y(axis)
    axis_labels(axis, "optimizer step", "global gradient L2 norm before clipping (log)")


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
    axis.set(xlabel="optimizer step")
    panel_title(axis, f"per-layer gradient norm: {run.label}")
    return image


def run_clip(run_dir: Path) -> str:
    """The run's ``--clip`` spec from its ``config.json`` (``""`` without one, or without
    the field: the curves are drawn in the unknown strategy's colour).

    Raises:
        UserError: ``config.json`` is not a regular file, too large or not JSON (the bounded
            reader of ``gradclip.app.untrusted``).
    """
    try:
        config = read_json(Path(run_dir) / CONFIG)
    except FileNotFoundError:
        return ""
    train = config.get("train") if isinstance(config, dict) else None
    clip = train.get("clip") if isinstance(train, dict) else None
    return clip if isinstance(clip, str) else ""


def plot_run(run_dir: Path) -> list[Path]:
    """``loss.png``, ``grad_norm.png`` and ``layer_norms.png`` in ``run_dir``.

    The run's curves take its clip spec's colour from ``palette``, as in every other figure.
    """
    run_dir = Path(run_dir)
    clip = run_clip(run_dir)
    curves = read_curves(run_dir, f"--clip {clip}" if clip else run_dir.name)
    if not curves.steps:
        return []
    colours = {curves.label: strategy_colours([clip or "none"])[clip or "none"]}
    paths = []
    for name, draw, title in (("loss.png", draw_loss, LOSS_TITLE),
                              ("grad_norm.png", draw_norms, NORMS_TITLE)):
        figure, (axis,) = panel_figure(1, width=8, height=4.8)
        draw(axis, [curves], colours)
        panel_title(axis, title)
        legend_below(figure, [line for line in axis.get_lines()
                              if not line.get_label().startswith("_")])
        figure_title(figure, run_dir.name)
        save_figure(figure, run_dir / name, 110)
        paths.append(run_dir / name)
    figure, (axis,) = panel_figure(1, width=9, height=1.6 + 0.35 * max(1, len(curves.layer_norms)))
    image = draw_heat_map(axis, curves)
    if image is not None:
        figure.colorbar(image, ax=axis, label="log10 L2 norm")
    save_figure(figure, run_dir / "layer_norms.png", 110)
    paths.append(run_dir / "layer_norms.png")
    if curves.eval_steps:
        paths.append(plot_validation(run_dir, curves))
    return paths


def plot_validation(run_dir: Path, curves: RunCurves) -> Path:
    """``validation.png``: the validation scores recorded at ``--eval-every``."""
    names = [name for name in ("mean_roc_auc", "accuracy", "bits_per_char", "mse", "loss")
             if len(curves.eval_scores.get(name, ())) == len(curves.eval_steps)][:2]
    figure, axes = panel_figure(len(names))
    for axis, name in zip(axes, names, strict=False):
        axis.plot(curves.eval_steps, curves.eval_scores[name], marker="o", color="tab:green")
        axis_labels(axis, "optimizer step", name)
        panel_title(axis, f"validation {name}")
    figure_title(figure, run_dir.name)
    save_figure(figure, run_dir / "validation.png", 110)
    return run_dir / "validation.png"


def setting_title(setting: Any, labels: Sequence[str]) -> str:
    """A compare panel's name from the settings that vary: ``lstm T=100 lr=0.01``."""
    parts = {"model": setting.model, "seq_len": f"T={setting.seq_len}",
             "lr": f"lr={setting.lr:g}"}
    return " ".join(parts[key] for key in labels if key in parts) or "all runs"


def plot_compare(out: Path, grouped: dict[Any, list[dict[str, Any]]], labels: Sequence[str]
                 ) -> list[Path]:
    """``losses.png``, ``grad_norms.png``, ``layer_norms.png`` (and ``success.png``) in ``out``.

    One panel per setting other than the clip (model, length, learning rate), one colour per
    clip spec (the same in every panel and figure), one line per seed, one legend below.
    """
    panels: dict[str, list[RunCurves]] = {}
    for setting, results in grouped.items():
        panel = panels.setdefault(setting_title(setting, labels), [])
        panel.extend(read_curves(Path(r["run_dir"]), setting.clip) for r in results)
    colours = strategy_colours(s.clip for s in grouped)
    paths = []
    for name, draw, title in (("losses.png", draw_loss, LOSS_TITLE),
                              ("grad_norms.png", draw_norms, NORMS_TITLE)):
        figure, axes = panel_figure(len(panels))
        for axis, (setting, runs) in zip(axes, panels.items(), strict=True):
            draw(axis, runs, colours)
            panel_title(axis, setting)
        legend_below(figure, line_handles(colours), title="--clip")
        figure_title(figure, f"{title}, one line per seed")
        save_figure(figure, out / name, 100)
        paths.append(out / name)
    paths.append(plot_layer_maps(out, panels))
    seq_lens = {s.seq_len for s in grouped}
    if len(seq_lens) > 1:
        paths.append(plot_success(out, grouped))
    return paths


def plot_layer_maps(out: Path, panels: dict[str, list[RunCurves]]) -> Path:
    """Per-layer heat maps of the first seed of each clip spec in the first panel."""
    title, runs = next(iter(panels.items()))
    firsts = list({run.label: run for run in reversed(runs)}.values())[::-1]
    figure, axes = panel_figure(len(firsts), width=9, max_columns=1,
                                height=1.2 + 0.3 * max(1, len(firsts[0].layer_norms)))
    values = [v for run in firsts for line in log_grid(run) for v in line if math.isfinite(v)]
    limits = (min(values), max(values)) if values else None
    images = [draw_heat_map(axis, run, limits) for axis, run in zip(axes, firsts, strict=True)]
    shown = [image for image in images if image is not None]
    if shown:
        figure.colorbar(shown[0], ax=axes, label="log10 L2 norm")
    figure_title(figure, f"per-layer gradient norm (first seed; one colour scale), {title}")
    save_figure(figure, out / "layer_norms.png", 100)
    return out / "layer_norms.png"


def plot_success(out: Path, grouped: dict[Any, list[dict[str, Any]]]) -> Path:
    """Success rate against sequence length, one panel per learning rate.

    Colour: the clip spec (as in every figure); line style: the model.
    """
    lrs = sorted({s.lr for s in grouped})
    figure, axes = panel_figure(len(lrs), width=5.6, height=4.2)
    styles = ["-", "--", ":", "-."]
    models = list(dict.fromkeys(s.model for s in grouped))
    colours = strategy_colours(s.clip for s in grouped)
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
                          linestyle=styles[models.index(model) % len(styles)])
        axis.set(xscale="log", ylim=(-5, 105))
        axis_labels(axis, "sequence length T (log scale)", "runs that learnt the task (%)")
        panel_title(axis, f"lr={lr:g}")
        axis.minorticks_off()
        axis.set_xticks(sorted({s.seq_len for s in grouped}),
                        [str(t) for t in sorted({s.seq_len for s in grouped})])
    legend_below(figure, line_handles(colours, marker="o") + [
        pyplot().Line2D([], [], color="grey", linestyle=styles[i % len(styles)], label=model)
        for i, model in enumerate(models)], title="colour: --clip; line: model")
    figure_title(figure, "success rate over seeds against sequence length")
    save_figure(figure, out / "success.png", 100)
    return out / "success.png"


def plot_demo(results: list[dict[str, Any]], strategies: tuple[str, ...], title: str,
              path: Path) -> Path:
    """Two panels (loss, gradient norm before clipping), one colour per strategy, all seeds."""
    figure, (loss_axis, norm_axis) = panel_figure(2, width=6.5, height=4.6)
    colours = strategy_colours(strategies)
    for strategy, colour in colours.items():
        for run in (result for result in results if result["strategy"] == strategy):
            steps = range(1, len(run["loss"]) + 1)
            loss_axis.plot(steps, moving_average(run["loss"], SMOOTHING), color=colour,
                           alpha=0.8, linewidth=1)
            norm_axis.plot(steps, run["grad_norm"], color=colour, alpha=0.5, linewidth=0.6)
            if not math.isfinite(run["loss"][-1]):
                loss_axis.plot(len(run["loss"]), DEMO_LOSS_CEILING / 3, marker="x", color=colour,
                               markersize=10, markeredgewidth=2)
    references = [
        loss_axis.axhline(1 / 6, color="grey", linestyle=":", label="predict 1 always (MSE 1/6)"),
        loss_axis.axhline(0.01, color="grey", linestyle="--", linewidth=0.8,
                          label="success: MSE 0.01"),
    ]
    loss_axis.set(yscale="log", ylim=(1e-4, DEMO_LOSS_CEILING))
    axis_labels(loss_axis, "optimizer step", f"training MSE, mean of {SMOOTHING} steps (log)")
    panel_title(loss_axis, f"training loss (x: loss became NaN, run stopped; axis cut at "
                           f"{DEMO_LOSS_CEILING:g})")
    norm_axis.set(yscale="log")
    axis_labels(norm_axis, "optimizer step", "global gradient L2 norm before clipping (log)")
    panel_title(norm_axis, "gradient norm before clipping")
    legend_below(figure, line_handles(colours) + references, title="--clip, one line per seed")
    figure_title(figure, title)
    save_figure(figure, path, 110)
    return path
