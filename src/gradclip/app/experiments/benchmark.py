"""``gradclip benchmark``: every clipping strategy on the same tasks, seeds and budget.

A suite is a grid of task x strategy x seed. Each task runs at a setting where training is
hard (SGD at a high learning rate, as in the demo and the Pascanu et al. reproduction; the
language model at a learning rate where unclipped training spikes). The thresholds of
``norm:X``, ``value:X`` and ``spikeskip+norm:X`` come from ``gradclip profile``'s rule: an
unclipped profile of the task's first ``profile_steps`` steps (seed 0), its recommendation.

Every run is an ordinary training run (the ``compare`` engine trains them, ``--jobs`` at a
time); rerunning a suite into the same folder trains only the runs that did not finish.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradclip.app.config import ModelConfig, TaskOptions, TrainConfig
from gradclip.app.experiments import compare
from gradclip.app.experiments.profile import measure, recommend
from gradclip.app.tasks import task_class
from gradclip.app.training.loggers import MetricsLogger, ProgressLines
from gradclip.app.training.rundir import remove_folder
from gradclip.app.training.runs import NewRun
from gradclip.app.training.setup import clipper_from_spec

STRATEGIES = ("none", "norm:{norm}", "value:{value}", "agc:0.01", "autoclip:0.1", "zclip",
              "adagc", "spikeskip+norm:{norm}")


@dataclass(frozen=True)
class TaskSetting:
    """One task of a suite: its options, model and training, and the profile length."""

    label: str
    options: TaskOptions
    model: ModelConfig
    train: TrainConfig
    profile_steps: int

    def run(self, clip: str, seed: int, run_dir: Path) -> NewRun:
        """The run of ``clip`` with ``seed`` in ``run_dir``."""
        return NewRun(dataclasses.replace(self.options, seed=seed), self.model,
                      dataclasses.replace(self.train, clip=clip, seed=seed), run_dir)


@dataclass(frozen=True)
class Suite:
    """Tasks, seeds and steps of a suite (``steps`` scales every task's budget)."""

    name: str
    seeds: int
    scale: float
    text_epochs: float
    notes: str = ""
    tasks: tuple[str, ...] = ("adding", "temporal-order", "lm")


SUITES = {
    "smoke": Suite("smoke", seeds=1, scale=0.05, text_epochs=0.25,
                   notes="a few minutes in all, for tests and CI: too short to rank anything"),
    "quick": Suite("quick", seeds=3, scale=0.5, text_epochs=1.0,
                   notes="about 30 minutes on 2 cores"),
    "full": Suite("full", seeds=5, scale=1.0, text_epochs=3.0, notes="hours"),
}


def hard_settings(suite: Suite, data: Path | None) -> list[TaskSetting]:
    """The suite's tasks at their hard settings (the text task only with ``--data``)."""
    def steps(full: int) -> int:
        return max(20, round(full * suite.scale))

    sgd: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.9, "device": "cpu", "threads": 1,
           "checkpoint_every": 0, "eval_every": 0, "log_every": 50}
    settings = [
        TaskSetting("adding T=10, rnn 64, SGD lr 0.15 (the demo)",
                    TaskOptions("adding", 0, 64, seq_len=10), ModelConfig(hidden_size=64),
                    TrainConfig(lr=0.15, schedule="warmdown", total_steps=steps(3000),
                                batch_size=64, **sgd), profile_steps=steps(300)),
        TaskSetting("temporal-order T=20, rnn 64, SGD lr 0.1",
                    TaskOptions("temporal-order", 0, 64, seq_len=20),
                    ModelConfig(hidden_size=64),
                    TrainConfig(lr=0.1, total_steps=steps(3000), batch_size=64, **sgd),
                    profile_steps=steps(300)),
        TaskSetting("lm, built-in text, rnn 128, SGD lr 1.0, windows of 50",
                    TaskOptions("lm", 0, 16, seq_len=50), ModelConfig(hidden_size=128,
                                                                      embed_dim=32),
                    TrainConfig(lr=1.0, total_steps=steps(2000), batch_size=16, **sgd),
                    profile_steps=steps(300)),
    ]
    if data is not None:
        settings.append(TaskSetting(
            "text, BiGRU 64, AdamW lr 3e-3", TaskOptions("text", 0, 64, data=data,
                                                         vocab_size=8000, max_len=128),
            ModelConfig(cell="gru", hidden_size=64, bidirectional=True, embed_dim=64),
            TrainConfig(optimizer="adamw", lr=3e-3, epochs=suite.text_epochs, batch_size=64,
                        device="cpu", threads=1, checkpoint_every=0, log_every=50),
            profile_steps=steps(100)))
    return settings


@dataclass
class Thresholds:
    """What the profile of a task recommends (``None``: nothing finite was measured)."""

    norm: float | None
    value: float | None
    note: str = ""

    def specs(self, strategies: tuple[str, ...]) -> list[str]:
        """The suite's strategies with this task's thresholds filled in (known specs only)."""
        norm = 1.0 if self.norm is None else self.norm
        value = 0.01 if self.value is None else self.value
        specs = [s.format(norm=f"{norm:.3g}", value=f"{value:.3g}") for s in strategies]
        return [spec for spec in specs if is_known(spec)]


def is_known(spec: str) -> bool:
    """Whether this installation of gradclip has the strategy (adagc, spikeskip are new)."""
    try:
        clipper_from_spec(spec)
    except Exception:  # noqa: BLE001 (an unknown strategy is left out, and said in the report)
        return False
    return True


def profile_thresholds(setting: TaskSetting, out: Path) -> Thresholds:
    """Profile the task unclipped, then recommend as ``gradclip profile`` does (p90, p99)."""
    folder = out / "profiles" / setting.options.name
    remove_folder(folder)
    train = dataclasses.replace(setting.train, clip="none", total_steps=setting.profile_steps,
                                epochs=None, log_every=0, eval_every=0)
    new = NewRun(setting.options, setting.model, train, folder)
    # a progress line at least every 30 s: a text profile is minutes long
    _, _, profile = measure(new, [MetricsLogger(folder), ProgressLines(f"profile {folder.name}")])
    recommendation = recommend(profile, 90.0, 99.0)
    if recommendation is None:
        return Thresholds(None, None, "no finite norm in the profile: norm:1 and value:0.01")
    return Thresholds(recommendation.norm_threshold, recommendation.value_threshold,
                      f"p90 of {len(profile.global_norms)} unclipped steps")


@dataclass
class TaskResult:
    """One task's table: a row per strategy, over the seeds."""

    setting: TaskSetting
    thresholds: Thresholds
    rows: list[dict[str, Any]] = field(default_factory=list)


def plan(settings: list[TaskSetting], thresholds: dict[str, Thresholds], seeds: int,
         out: Path) -> tuple[list[tuple[tuple[str, str], NewRun]], list[tuple[str, str]]]:
    """Every (task, strategy) key and its runs over the seeds, in table order."""
    points, keys = [], []
    for setting in settings:
        task = setting.options.name
        for spec in thresholds[task].specs(STRATEGIES):
            keys.append((task, spec))
            for seed in range(seeds):
                folder = out / "runs" / task / f"{safe(spec)}-seed{seed}"
                points.append(((task, spec), setting.run(spec, seed, folder)))
    return points, keys


def safe(spec: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in spec)


def summarise(settings: list[TaskSetting], thresholds: dict[str, Thresholds],
              grouped: dict[tuple[str, str], list[dict[str, Any]]]) -> list[TaskResult]:
    """Per task: a row per strategy (diverged, metric, clip and skip rates, overhead, rank)."""
    results = []
    for setting in settings:
        task = setting.options.name
        kind = task_class(task)
        rows = [strategy_row(spec, runs, kind.metric_name)
                for (name, spec), runs in grouped.items() if name == task]
        base = next((r["seconds_per_step"] for r in rows if r["strategy"] == "none"), math.nan)
        for r in rows:
            r["overhead"] = r["seconds_per_step"] / base - 1 if base > 0 else math.nan
        rank_rows(rows, kind.higher_is_better)
        results.append(TaskResult(setting, thresholds[task], rows))
    return results


def strategy_row(spec: str, runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    summaries = [r["summary"] for r in runs]
    steps = [max(1, s["step"]) for s in summaries]
    return {
        "strategy": spec, "seeds": len(runs),
        "diverged": sum(compare.diverged(r) for r in runs),
        "metric": [compare.number((s.get("eval") or {}).get(metric)) for s in summaries],
        "clipped": statistics.mean(s["clipped_steps"] / n for s, n in zip(summaries, steps,
                                                                            strict=True)),
        "skipped": statistics.mean(s["skipped_steps"] / n for s, n in zip(summaries, steps,
                                                                            strict=True)),
        "seconds_per_step": statistics.median(s["seconds"] / n for s, n in zip(
            summaries, steps, strict=True)),
        "steps": statistics.median(steps),
        "run_dirs": [r["run_dir"] for r in runs],
    }


def rank_rows(rows: list[dict[str, Any]], higher_is_better: bool) -> None:
    """Rank 1 is best: fewest diverged runs, then the best mean metric of the finite runs."""
    def key(row: dict[str, Any]) -> tuple[int, float]:
        finite = [v for v in row["metric"] if math.isfinite(v)]
        mean = statistics.mean(finite) if finite else math.inf * (-1 if higher_is_better else 1)
        return row["diverged"], -mean if higher_is_better else mean

    for rank, row in enumerate(sorted(rows, key=key), start=1):
        row["rank"] = rank


def versions() -> str:
    import platform

    import gradclip

    return (f"gradclip {gradclip.__version__}, torch {torch.__version__}, Python "
            f"{platform.python_version()}, torch.get_num_threads() = 1 per run")


def task_table(result: TaskResult) -> str:
    """One task's Markdown table, best rank first."""
    metric = task_class(result.setting.options.name).metric_name
    lines = [f"| rank | strategy | diverged | final {metric} (mean ± sd) | clipped | skipped "
             "| time per step vs none |", "|---:|---|---:|---:|---:|---:|---:|"]
    for row in sorted(result.rows, key=lambda r: r["rank"]):
        overhead = row["overhead"]
        shown = "—" if row["strategy"] == "none" or not math.isfinite(overhead) else \
            f"{overhead:+.0%}"
        lines.append(f"| {row['rank']} | {row['strategy']} | {row['diverged']}/{row['seeds']} "
                     f"| {compare.mean_std(row['metric'])} | {row['clipped']:.0%} "
                     f"| {row['skipped']:.0%} | {shown} |")
    return "\n".join(lines)


def summary_table(results: list[TaskResult]) -> str:
    """Ranks of every strategy family on every task, and the mean rank."""
    from gradclip.app.experiments.plots import strategy_family

    names = list(dict.fromkeys(strategy_family(r["strategy"]) for t in results for r in t.rows))
    tasks = [t.setting.options.name for t in results]
    ranks = {(strategy_family(r["strategy"]), t.setting.options.name): r["rank"]
             for t in results for r in t.rows}
    lines = ["| strategy | " + " | ".join(tasks) + " | mean rank |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    rows = []
    for name in names:
        values = [ranks.get((name, task)) for task in tasks]
        known = [v for v in values if v is not None]
        rows.append((statistics.mean(known) if known else math.inf, name, values))
    for mean, name, values in sorted(rows):
        cells = " | ".join("—" if v is None else str(v) for v in values)
        lines.append(f"| {name} | {cells} | {mean:.1f} |")
    return "\n".join(lines)


def report(suite: Suite, results: list[TaskResult], command: str, figures: list[Path],
           elapsed: float, left_out: list[str]) -> str:
    """``report.md``: the setting and table of each task, the summary, the command, versions."""
    runs = sum(row["seeds"] for result in results for row in result.rows)
    training = sum(row["seconds_per_step"] * row["steps"] * row["seeds"]
                   for result in results for row in result.rows)
    lines = [f"# gradclip benchmark: suite {suite.name}", "",
             f"{suite.seeds} seed(s) per run; {suite.notes}. {runs} runs, {training / 60:.0f} "
             f"minutes of training in all (one thread each); this invocation took "
             f"{elapsed:.0f} s (runs finished earlier are kept).", "",
             "Rank: fewest diverged runs first (a run diverged when its loss became NaN/Inf or "
             f"its final validation loss exceeds {compare.DIVERGENCE_FACTOR:g}x its first "
             "training loss), then the best mean final metric. Clipped/skipped: share of "
             "steps. Time per step: median over seeds, against `none` in the same run.", ""]
    for result in results:
        t = result.thresholds
        norm = "none" if t.norm is None else f"{t.norm:.3g}"
        value = "none" if t.value is None else f"{t.value:.3g}"
        lines += [f"## {result.setting.label}", "",
                  f"Thresholds from an unclipped profile ({t.note}): norm {norm}, value "
                  f"{value}.", "", task_table(result), ""]
    lines += ["## Summary across tasks", "", summary_table(results), ""]
    if left_out:
        lines += [f"Not in this installation, left out: {', '.join(left_out)}.", ""]
    lines += [f"![{path.stem}]({path.name})" for path in figures]
    lines += ["", "Reproduce with:", "", f"    {command}", "", versions(), ""]
    return "\n".join(lines)


def rows_json(results: list[TaskResult]) -> list[dict[str, Any]]:
    """``results.json``: every task's setting, thresholds and rows (with every run folder)."""
    return [{"task": r.setting.options.name, "label": r.setting.label,
             "thresholds": {"norm": r.thresholds.norm, "value": r.thresholds.value,
                            "note": r.thresholds.note},
             "rows": r.rows} for r in results]


def left_out_strategies() -> list[str]:
    """The suite's strategies this installation lacks (filled with a dummy threshold)."""
    return [spec.format(norm="X", value="X") for spec in STRATEGIES
            if not is_known(spec.format(norm="1", value="1"))]
