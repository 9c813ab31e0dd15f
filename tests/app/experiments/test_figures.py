"""Every figure type, drawn with 1, 2 and 8 strategies: distinct colours within a panel, no text
box on another, nothing outside the figure, and legends off the data."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("matplotlib")

from gradclip.app.experiments import plots  # noqa: E402
from gradclip.app.experiments.compare import Setting  # noqa: E402
from gradclip.app.experiments.palette import strategy_colours  # noqa: E402

STRATEGY_SETS = {
    1: ["norm:1.0"],
    2: ["none", "norm:1.0"],
    8: ["none", "norm:1.0", "value:0.01", "agc:0.01", "autoclip:0.1", "zclip",
        "spikeskip+norm:0.83", "norm:0.5"],
}
STEPS = 60


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save, drawn but kept open for inspection."""
    figures = {}

    def keep(figure, path, dpi):
        figures[Path(path).name] = figure

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    for figure in figures.values():
        plots.pyplot().close(figure)


def fake_run(folder: Path, seed: int, clip: str = "norm:1.0", diverge: bool = False) -> Path:
    """A run folder whose ``metrics.jsonl`` looks like a real run's (layers, eval, threshold)."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    lines = []
    for step in range(1, STEPS + 1):
        loss = math.inf if diverge and step == STEPS else 0.2 * math.exp(-step / 30) + rng.random() / 50
        record = {"step": step, "loss": loss, "grad_norm": 10 ** rng.uniform(-1, 1),
                  "threshold": 1.0}
        if step % 10 == 0:
            record["layer_grad_norms"] = {f"rnn.weight_hh_l{k}": 10 ** rng.uniform(-2, 0)
                                          for k in range(3)}
            record["eval"] = {"mse": loss, "accuracy": 0.5 + step / 200}
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps({"train": {"clip": clip}}))
    return folder


def overlapping(first, second, slack: float = 1.0) -> bool:
    return (min(first.x1, second.x1) - max(first.x0, second.x0) > slack
            and min(first.y1, second.y1) - max(first.y0, second.y0) > slack)


def drawn_tick_labels(axis, coordinate: int) -> list:
    """The major and minor tick labels inside the view (the others exist but are not drawn)."""
    low, high = sorted(axis.get_view_interval())
    return [label for minor in (False, True) for label in axis.get_ticklabels(minor=minor)
            if low <= label.get_position()[coordinate] <= high]


def text_boxes(figure) -> list[tuple[str, object]]:
    """(name, window extent) of every title, label, tick label and legend of the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)  # the renderer savefig uses, with the layout it computes
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    if figure._suptitle is not None and figure._suptitle.get_text():
        boxes.append(("suptitle", figure._suptitle.get_window_extent(renderer)))
    boxes += [(f"figure legend {i}", legend.get_window_extent(renderer))
              for i, legend in enumerate(figure.legends)]
    for index, axis in enumerate(figure.axes):
        if not axis.axison:
            continue
        texts = [("title", axis.title), ("xlabel", axis.xaxis.label), ("ylabel", axis.yaxis.label)]
        texts += [(f"xtick {t.get_text()}", t) for t in drawn_tick_labels(axis.xaxis, 0)]
        texts += [(f"ytick {t.get_text()}", t) for t in drawn_tick_labels(axis.yaxis, 1)]
        boxes += [(f"axes {index} {name}", text.get_window_extent(renderer))
                  for name, text in texts if text.get_visible() and text.get_text()]
        if axis.get_legend() is not None:
            boxes.append((f"axes {index} legend", axis.get_legend().get_window_extent(renderer)))
    return boxes


def assert_reads(figure, name: str) -> None:
    """No two text boxes overlap, all lie inside the figure, and no legend covers a panel."""
    boxes = text_boxes(figure)
    page = figure.bbox
    for label, box in boxes:
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 \
            and box.y1 <= page.y1 + 1, f"{name}: {label} is cut by the figure's edge"
    for (first, a), (second, b) in itertools.combinations(boxes, 2):
        assert not overlapping(a, b), f"{name}: {first} overlaps {second}"
    panels = [axis.get_window_extent() for axis in figure.axes if axis.axison]
    for label, box in boxes:
        if "legend" in label:
            assert not any(overlapping(box, panel) for panel in panels), \
                f"{name}: {label} covers a panel's data"


def solid_line_colours(axis) -> list[str]:
    """The colours of the panel's solid data lines (threshold and reference lines are dashed)."""
    from matplotlib.colors import to_hex

    return [to_hex(line.get_color()) for line in axis.get_lines()
            if line.get_linestyle() == "-" and len(line.get_xdata()) > 0]


def assert_one_colour_per_strategy(figure, name: str, strategies_per_panel: int) -> None:
    for axis in figure.axes:
        if axis.axison and axis.get_lines():
            assert len(set(solid_line_colours(axis))) == strategies_per_panel, \
                f"{name}: a colour is shared by two strategies, or a strategy has two colours"


@pytest.mark.parametrize("count", sorted(STRATEGY_SETS))
def test_compare_figures_read_with_one_colour_per_clip(tmp_path, drawn, count):
    clips = STRATEGY_SETS[count]
    grouped = {}
    for seq_len, lr, clip in itertools.product((50, 200), (0.01,), clips):
        grouped[Setting("lstm", seq_len, lr, clip)] = [
            {"run_dir": fake_run(tmp_path / f"{seq_len}-{clip}-{seed}", seed, clip,
                                 diverge=clip == "none"), "summary": {"success": seed == 0}}
            for seed in range(2)]
    plots.plot_compare(tmp_path, grouped, ["seq_len"])
    assert set(drawn) == {"losses.png", "grad_norms.png", "layer_norms.png", "success.png"}
    for name, figure in drawn.items():
        assert_reads(figure, name)
    for name in ("losses.png", "grad_norms.png", "success.png"):
        assert_one_colour_per_strategy(drawn[name], name, count)


def test_compare_figures_of_a_single_setting_read(tmp_path, drawn):
    """One panel, one clip: the narrowest figure, whose title once ran off both edges."""
    setting = Setting("rnn", None, 0.05, "norm:1.0")
    plots.plot_compare(tmp_path, {setting: [{"run_dir": fake_run(tmp_path / "run", 0),
                                             "summary": {"success": True}}]}, [])
    assert set(drawn) == {"losses.png", "grad_norms.png", "layer_norms.png"}
    for name, figure in drawn.items():
        assert_reads(figure, name)


@pytest.mark.parametrize("count", sorted(STRATEGY_SETS))
def test_benchmark_figures_read_with_one_colour_per_strategy(tmp_path, drawn, count,
                                                            monkeypatch):
    from gradclip.app.experiments import benchmark_plots

    monkeypatch.setattr(benchmark_plots, "save_figure", plots.save_figure)  # the keeper

    rng = random.Random(count)
    specs = STRATEGY_SETS[count]
    grids = {"lm-transformer": [0.001, 0.003, 0.01, 0.03, 0.1],  # the published grids: under
             "adding-rnn": [0.05, 0.15, 0.5], "lm-rnn": [0.3, 1.0, 3.0]}  # a decade, too
    tasks = [{"task": name, "metric": "mse", "higher_is_better": False, "lrs": lrs,
              "initial_metric": 1.0} for name, lrs in grids.items()]
    sweep = [{"task": t["task"], "strategy": spec, "lr": lr, "metric_mean": 0.5,
              "metric_ci95": [0.4, 0.6], "spikes_mean": rng.random(), "diverged": 0}
             for t in tasks for spec in specs for lr in t["lrs"]]
    records = [{"task": t["task"], "strategy": spec, "lr": lr, "stage": "scoring",
                "curve": [[step, 1 + rng.random()] for step in range(1, STEPS)]}
               for t in tasks for spec in specs for lr in t["lrs"] for _ in range(2)]
    results = {"tasks": tasks, "sweep": sweep, "records": records, "spike_k": 6,
               "spike_window": 50}
    benchmark_plots.plot_all(tmp_path, results)
    assert set(drawn) == {"sweep.png", "losses.png", "spikes.png"}
    for name, figure in drawn.items():
        assert_reads(figure, name)
        assert_one_colour_per_strategy(figure, name, count)
        panels = [axis for axis in figure.axes if axis.axison]
        assert len({tuple(solid_line_colours(axis)) for axis in panels}) == 1, \
            f"{name}: a strategy changes colour between panels"


@pytest.mark.parametrize("count", sorted(STRATEGY_SETS))
def test_demo_figure_reads_with_one_colour_per_strategy(tmp_path, drawn, count):
    rng = random.Random(count)
    results = [{"strategy": spec, "seed": seed,
                "loss": [0.3 * rng.random() for _ in range(STEPS)] + ([math.nan] if spec == "none"
                                                                     else []),
                "grad_norm": [10 ** rng.uniform(-1, 3) for _ in range(STEPS)]
                + ([math.inf] if spec == "none" else [])}
               for spec in STRATEGY_SETS[count] for seed in range(3)]
    plots.plot_demo(results, tuple(STRATEGY_SETS[count]),
                    "gradclip demo: an LSTM on the temporal-order problem (T=100) over 3 seeds",
                    tmp_path / "demo.png")
    assert_reads(drawn["demo.png"], "demo.png")
    assert_one_colour_per_strategy(drawn["demo.png"], "demo.png", count)


@pytest.mark.parametrize("clip", STRATEGY_SETS[8])
def test_run_figures_read_in_the_clips_own_colour(tmp_path, drawn, clip):
    run = fake_run(tmp_path / "run", 0, clip)
    plots.plot_run(run)
    assert set(drawn) == {"loss.png", "grad_norm.png", "layer_norms.png", "validation.png"}
    for name, figure in drawn.items():
        assert_reads(figure, name)
    assert set(solid_line_colours(drawn["loss.png"].axes[0])) == {
        strategy_colours([clip])[clip].lower()}


def test_profile_figure_reads(drawn, tmp_path):
    rng = random.Random(0)
    recommendation = SimpleNamespace(
        specs=("norm:1.2", "value:0.01"), norm_threshold=1.2, value_threshold=0.01,
        norm_rule="p90 of the finite global norms before the first spike",
        value_rule="norm/sqrt(n) cap, n = 123456 (p99 of |g| is 0.04)")
    modules = {f"encoder.layers.{k}.self_attention.in_proj": [10 ** rng.uniform(-2, 1)
                                                               for _ in range(50)]
               for k in range(6)}
    plots.plot_profile([10 ** rng.uniform(-1, 2) for _ in range(200)], modules,
                       [10 ** rng.uniform(-6, -1) for _ in range(500)], recommendation,
                       tmp_path / "gradient_histogram.png")
    assert_reads(drawn["gradient_histogram.png"], "gradient_histogram.png")
