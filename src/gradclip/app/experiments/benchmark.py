"""``gradclip benchmark``: every clipping strategy over a learning-rate sweep, tuned fairly.

A suite is a set of task settings. Each setting runs at a grid of learning rates, from stable
to unstable (AdamW rates for the transformer language model, SGD rates around the recurrent
tasks' usual settings). At every rate each strategy family trains on the same seeds:

1. **Thresholds.** ``norm:X`` and ``value:X`` take X from ``gradclip profile``'s rule on an
   unclipped profile of the setting (seed 0, its reference rate), swept over X x {0.25, 1, 4};
   the adaptive strategies run with their paper's defaults and one alternative each.
2. **Selection pass.** Every variant of a family trains on the selection seeds (1000, 1001,
   ...); the variant with the best mean capped score is the family's choice at that rate.
3. **Scoring pass.** The chosen variant trains on the scoring seeds (0, 1, ...): no choice
   ever sees a seed it is scored on.

The scores, their bootstrap intervals, the learning-rate sensitivity, loss spikes, rank groups
and the claims table come from ``gradclip.app.experiments.benchmark_results``. Every run is
an ordinary training run (the ``compare`` engine trains them, ``--jobs`` at a time); rerunning
a suite into the same folder trains only the runs that did not finish.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradclip.app.config import ModelConfig, TaskOptions, TrainConfig
from gradclip.app.experiments import compare
from gradclip.app.experiments.profile import measure, recommend
from gradclip.app.experiments.sweep_stats import capped_score, spike_steps
from gradclip.app.tasks import task_class
from gradclip.app.training.loggers import MetricsLogger, ProgressLines
from gradclip.app.training.metrics_log import number, read_metrics
from gradclip.app.training.rundir import remove_folder
from gradclip.app.training.runs import NewRun, create_run
from gradclip.app.training.setup import clipper_from_spec

SELECTION_SEED_BASE = 1000  # selection seeds are 1000, 1001, ...; scoring seeds 0, 1, ...
THRESHOLD_FACTORS = (0.25, 1.0, 4.0)
CURVE_POINTS = 120  # points kept of each scoring run's loss curve in results.json


@dataclass(frozen=True)
class Family:
    """A strategy and its variants; the first is the paper's default (or the profile's X)."""

    name: str
    variants: tuple[str, ...]
    reference: str

    def specs(self, norm: float, value: float) -> list[str]:
        """The variants with the profile's thresholds filled in."""
        fill = {"norm": norm, "value": value}
        specs = []
        for template in self.variants:
            specs.append(template.format(**{f"{name}{suffix}": f"{fill[name] * factor:.3g}"
                                            for name in fill
                                            for suffix, factor in zip(("_low", "", "_high"),
                                                                      THRESHOLD_FACTORS,
                                                                      strict=True)}))
        return specs


FAMILIES = (
    Family("none", ("none",), "no clipping"),
    Family("norm", ("norm:{norm}", "norm:{norm_low}", "norm:{norm_high}"),
           "Pascanu, Mikolov & Bengio 2013"),
    Family("value", ("value:{value}", "value:{value_low}", "value:{value_high}"),
           "Mikolov 2012, as discussed by Pascanu et al. 2013"),
    Family("agc", ("agc:0.01", "agc:0.1"), "Brock et al. 2021"),
    Family("autoclip", ("autoclip:0.1", "autoclip:0.25"), "Seetharaman et al. 2020"),
    Family("zclip", ("zclip", "zclip:z_thresh=2.0"), "Kumar et al. 2025"),
    Family("adagc", ("adagc", "adagc:lambda_rel=1.1"), "Wang et al. 2025"),
    Family("spikeskip+norm", ("spikeskip+norm:{norm}", "spikeskip:sigma=4+norm:{norm}"),
           "OLMo-core's SkipStepOptimizer"),
)


@dataclass(frozen=True)
class TaskSetting:
    """One task of a suite: its label, options, model, training, rate grid and profile."""

    label: str
    description: str
    options: TaskOptions
    model: ModelConfig
    train: TrainConfig
    lrs: tuple[float, ...]
    profile_steps: int

    def run(self, clip: str, lr: float, seed: int, run_dir: Path) -> NewRun:
        """The run of ``clip`` at ``lr`` with ``seed`` in ``run_dir``."""
        return NewRun(dataclasses.replace(self.options, seed=seed), self.model,
                      dataclasses.replace(self.train, clip=clip, lr=lr, seed=seed), run_dir)

    @property
    def reference_lr(self) -> float:
        """The rate of the unclipped profile: the middle of the grid (the lower middle)."""
        return self.lrs[(len(self.lrs) - 1) // 2]


@dataclass(frozen=True)
class Suite:
    """Seeds, budget scale and tasks of a suite."""

    name: str
    seeds: int
    selection_seeds: int
    scale: float
    notes: str = ""
    transformer: tuple[int, int, int, int] = (4, 128, 4, 2000)  # layers, width, heads, steps
    text: bool = False  # the text-classification task (with --data)


SUITES = {
    "smoke": Suite("smoke", seeds=1, selection_seeds=1, scale=0.02, transformer=(2, 64, 2, 40),
                   notes="a few minutes in all, for tests and CI: too short to rank anything"),
    "quick": Suite("quick", seeds=3, selection_seeds=1, scale=0.25,
                   transformer=(2, 64, 2, 400),
                   notes="about half an hour on 2 cores with --jobs 2"),
    "full": Suite("full", seeds=5, selection_seeds=2, scale=1.0, text=True,
                  notes="about 40 hours on 2 cores with --jobs 2 (estimated from quick's runs)"),
}


def transformer_setting(suite: Suite, data: Path | None) -> TaskSetting:
    """The small GPT on real text (nanoGPT's CPU character model in ``full``, a narrower one
    in ``quick`` and ``smoke``): AdamW with warm-up and cosine decay over 5 rates (2 in
    ``smoke``)."""
    layers, width, heads, steps = suite.transformer
    text = "the comments of --data" if data else "the built-in text"
    return TaskSetting(
        "lm-transformer", f"character LM on {text}, transformer {layers} layers x {width} ({heads} heads), context 64, batch 12, AdamW (weight decay 0.1), 10 % "
        f"warm-up, cosine to 0.1 x, {steps} steps",
        TaskOptions("lm", 0, 12, seq_len=64, data=data, model="transformer"),
        ModelConfig(cell="transformer", hidden_size=width, layers=layers, heads=heads,
                    dropout=0.0),
        TrainConfig(optimizer="adamw", weight_decay=0.1, schedule="cosine",
                    warmup_steps=max(1, steps // 10), min_lr_ratio=0.1, total_steps=steps,
                    batch_size=12, device="cpu", threads=1, checkpoint_every=0, eval_every=0,
                    log_every=0),
        lrs=(1e-3, 1e-1) if suite.name == "smoke" else (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
        profile_steps=max(10, steps // 5))


def settings_for(suite: Suite, data: Path | None) -> list[TaskSetting]:
    """The suite's task settings: the transformer language model first (on ``--data``'s
    comments when given, else the built-in text), then the recurrent tasks.

    The smoke suite keeps the transformer at 2 rates and one recurrent task at 2 rates.
    """
    def steps(full: int) -> int:
        return max(20, round(full * suite.scale))

    sgd: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.9, "device": "cpu", "threads": 1,
                           "checkpoint_every": 0, "eval_every": 0, "log_every": 0}
    smoke = suite.name == "smoke"
    settings = [
        transformer_setting(suite, data),
        TaskSetting("adding-rnn", "adding problem T=10, RNN 64, SGD, warm-down",
                    TaskOptions("adding", 0, 64, seq_len=10), ModelConfig(hidden_size=64),
                    TrainConfig(schedule="warmdown", total_steps=steps(3000), batch_size=64,
                                **sgd),
                    lrs=(0.05, 0.5) if smoke else (0.05, 0.15, 0.5), profile_steps=steps(300)),
    ]
    if smoke:
        return settings
    settings += [
        TaskSetting("temporal-order-rnn", "temporal order T=20, RNN 64, SGD",
                    TaskOptions("temporal-order", 0, 64, seq_len=20), ModelConfig(hidden_size=64),
                    TrainConfig(total_steps=steps(3000), batch_size=64, **sgd),
                    lrs=(0.03, 0.1, 0.3), profile_steps=steps(300)),
        TaskSetting("lm-rnn", "character LM, built-in text, RNN 128, SGD, windows of 50",
                    TaskOptions("lm", 0, 16, seq_len=50),
                    ModelConfig(hidden_size=128, embed_dim=32),
                    TrainConfig(total_steps=steps(2000), batch_size=16, **sgd),
                    lrs=(0.3, 1.0, 3.0), profile_steps=steps(300)),
    ]
    if suite.text and data is not None:
        settings.append(TaskSetting(
            "text-bigru", "toxic comments, BiGRU 64, AdamW",
            TaskOptions("text", 0, 64, data=data, vocab_size=8000, max_len=128),
            ModelConfig(cell="gru", hidden_size=64, bidirectional=True, embed_dim=64),
            TrainConfig(optimizer="adamw", epochs=1.0, device="cpu", threads=1,
                        checkpoint_every=0, log_every=0),
            lrs=(1e-3, 3e-3, 1e-2), profile_steps=steps(100)))
    return settings


@dataclass
class Thresholds:
    """What the profile of a setting recommends (``None``: nothing finite was measured)."""

    norm: float | None
    value: float | None
    note: str = ""

    def specs(self, family: Family) -> list[str]:
        """The family's variants with these thresholds (norm 1 and value 0.01 if none)."""
        return family.specs(1.0 if self.norm is None else self.norm,
                            0.01 if self.value is None else self.value)


def is_known(spec: str) -> bool:
    """Whether the spec names a strategy this installation has."""
    try:
        clipper_from_spec(spec)
    except Exception:  # noqa: BLE001 (an unknown strategy is left out, and said in the report)
        return False
    return True


def profile_thresholds(setting: TaskSetting, out: Path) -> Thresholds:
    """Profile the setting unclipped at its reference rate; recommend as ``gradclip profile``."""
    folder = out / "profiles" / setting.label
    remove_folder(folder)
    train = dataclasses.replace(setting.train, clip="none", lr=setting.reference_lr,
                                total_steps=setting.profile_steps, epochs=None, log_every=0,
                                eval_every=0)
    new = NewRun(setting.options, setting.model, train, folder)
    # a progress line at least every 30 s: a text profile is minutes long
    _, _, profile = measure(new, [MetricsLogger(folder), ProgressLines(f"profile {folder.name}")])
    recommendation = recommend(profile, 90.0, 99.0)
    if recommendation is None:
        return Thresholds(None, None, "no finite norm in the profile: norm:1 and value:0.01")
    return Thresholds(recommendation.norm_threshold, recommendation.value_threshold,
                      f"p90 of {len(profile.global_norms)} unclipped steps at lr "
                      f"{setting.reference_lr:g}")


def initial_metric(setting: TaskSetting, out: Path) -> float:
    """The headline metric of the untrained model (seed 0): the cap of a diverged run."""
    from gradclip.app.training.trainer import Trainer

    folder = out / "profiles" / f"{setting.label}-init"
    remove_folder(folder)
    train = dataclasses.replace(setting.train, clip="none", total_steps=1, epochs=None)
    with create_run(NewRun(setting.options, setting.model, train, folder)) as current:
        trainer = Trainer(current.run_dir, current.config, current.task)
        scores = current.task.evaluate(trainer.model, torch.device("cpu"))
    remove_folder(folder)
    return float(scores[task_class(setting.options.name).metric_name])


def run_folder(out: Path, setting: TaskSetting, lr: float, spec: str, seed: int) -> Path:
    return out / "runs" / setting.label / f"lr{lr:g}" / f"{safe(spec)}-seed{seed}"


def safe(spec: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in spec)


PointKey = tuple[str, float, str, str, int]  # (setting label, lr, family, spec, seed)


def selection_plan(settings: list[TaskSetting], thresholds: dict[str, Thresholds],
                   suite: Suite, out: Path) -> list[tuple[PointKey, NewRun]]:
    """Every variant of every family with more than one, at every rate, on the selection
    seeds."""
    points = []
    for setting in settings:
        for lr in setting.lrs:
            for family in FAMILIES:
                specs = [s for s in thresholds[setting.label].specs(family) if is_known(s)]
                if len(specs) < 2:
                    continue
                for spec in specs:
                    for seed in selection_seeds(suite):
                        points.append(((setting.label, lr, family.name, spec, seed),
                                       setting.run(spec, lr, seed,
                                                   run_folder(out, setting, lr, spec, seed))))
    return points


def scoring_plan(settings: list[TaskSetting], chosen: dict[tuple[str, float, str], str],
                 suite: Suite, out: Path) -> list[tuple[PointKey, NewRun]]:
    """The chosen variant of every family at every rate, on the scoring seeds."""
    points = []
    for setting in settings:
        for lr in setting.lrs:
            for family in FAMILIES:
                spec = chosen.get((setting.label, lr, family.name))
                if spec is None:
                    continue
                for seed in range(suite.seeds):
                    points.append(((setting.label, lr, family.name, spec, seed),
                                   setting.run(spec, lr, seed,
                                               run_folder(out, setting, lr, spec, seed))))
    return points


def selection_seeds(suite: Suite) -> range:
    return range(SELECTION_SEED_BASE, SELECTION_SEED_BASE + suite.selection_seeds)


def choose_variants(settings: list[TaskSetting], thresholds: dict[str, Thresholds],
                    records: list[dict[str, Any]]) -> tuple[dict[tuple[str, float, str], str],
                                                            list[dict[str, Any]]]:
    """Each family's variant at each rate: the best mean capped score on the selection seeds
    (the first listed wins a tie; a family with one variant has nothing to choose).

    Returns:
        the choice per ``(setting, lr, family)`` and one selection entry per choice made.
    """
    chosen: dict[tuple[str, float, str], str] = {}
    entries = []
    for setting in settings:
        higher = task_class(setting.options.name).higher_is_better
        for lr in setting.lrs:
            for family in FAMILIES:
                specs = [s for s in thresholds[setting.label].specs(family) if is_known(s)]
                if not specs:
                    continue
                if len(specs) == 1:
                    chosen[(setting.label, lr, family.name)] = specs[0]
                    continue
                means = {}
                for spec in specs:
                    scores = [r["score"] for r in records if r["stage"] == "selection"
                              and r["task"] == setting.label and r["lr"] == lr
                              and r["spec"] == spec]
                    if scores:
                        means[spec] = sum(scores) / len(scores)
                if not means:  # no selection run finished: nothing to choose from
                    continue
                best = (max if higher else min)(means, key=lambda s: means[s])
                chosen[(setting.label, lr, family.name)] = best
                entries.append({"task": setting.label, "lr": lr, "strategy": family.name,
                                "chosen": best, "candidates": means})
    return chosen, entries


def run_record(key: PointKey, result: dict[str, Any], stage: str, initial: float,
               setting: TaskSetting) -> dict[str, Any]:
    """One finished run, as ``results.json`` keeps it: its score, divergence and spikes."""
    label, lr, family, spec, seed = key
    kind = task_class(setting.options.name)
    summary = result["summary"]
    metric = number((summary.get("eval") or {}).get(kind.metric_name))
    diverged = compare.diverged(result)
    losses = [number(r.get("loss")) for r in read_metrics(Path(result["run_dir"]))]
    record = {
        "task": label, "lr": lr, "strategy": family, "spec": spec, "stage": stage,
        "seed": seed, "diverged": diverged, "metric": metric,
        "score": capped_score(metric, diverged, initial, kind.higher_is_better),
        "spikes": len(spike_steps(losses)), "steps": len(losses),
        "clipped_steps": summary.get("clipped_steps"),
        "skipped_steps": summary.get("skipped_steps"), "run_dir": result["run_dir"],
    }
    if stage == "scoring":
        stride = max(1, math.ceil(len(losses) / CURVE_POINTS))
        record["curve"] = [[i + 1, losses[i]] for i in range(0, len(losses), stride)]
    return record


def left_out_strategies() -> list[str]:
    """The families' variants this installation lacks."""
    return [spec for family in FAMILIES for spec in family.specs(1.0, 0.01)
            if not is_known(spec)]


def task_entry(setting: TaskSetting, thresholds: Thresholds, initial: float) -> dict[str, Any]:
    """A task of ``results.json``: its label, setting, metric, rates and thresholds."""
    kind = task_class(setting.options.name)
    return {"task": setting.label, "description": setting.description,
            "metric": kind.metric_name, "higher_is_better": kind.higher_is_better,
            "lrs": list(setting.lrs), "initial_metric": initial,
            "steps": setting.train.total_steps,
            "thresholds": {"norm": thresholds.norm, "value": thresholds.value,
                           "note": thresholds.note}}


def versions() -> str:
    import platform

    import gradclip

    return (f"gradclip {gradclip.__version__}, torch {torch.__version__}, Python "
            f"{platform.python_version()}, CPU {platform.processor() or platform.machine()}, "
            "torch.get_num_threads() = 1 per run")
