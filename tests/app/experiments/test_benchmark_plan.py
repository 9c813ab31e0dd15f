"""The benchmark's plan (selection and scoring seeds), its choices and its claims, on records
made by hand: no training."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradclip.app.experiments import benchmark, benchmark_results, claims


def settings(suite_name: str) -> list[benchmark.TaskSetting]:
    return benchmark.settings_for(benchmark.SUITES[suite_name], Path("comments.csv"))


THRESHOLDS = benchmark.Thresholds(1.0, 0.01)


@pytest.mark.parametrize("suite_name", sorted(benchmark.SUITES))
def test_selection_seeds_and_scoring_seeds_never_overlap(suite_name, tmp_path):
    suite = benchmark.SUITES[suite_name]
    tasks = settings(suite_name)
    thresholds = {s.label: THRESHOLDS for s in tasks}
    selection = benchmark.selection_plan(tasks, thresholds, suite, tmp_path)
    chosen = {(s.label, lr, f.name): THRESHOLDS.specs(f)[0]
              for s in tasks for lr in s.lrs for f in benchmark.FAMILIES}
    scoring = benchmark.scoring_plan(tasks, chosen, suite, tmp_path)
    selection_seeds = {run.train.seed for _, run in selection} | {
        run.options.seed for _, run in selection}
    scoring_seeds = {run.train.seed for _, run in scoring} | {run.options.seed for _, run in scoring}
    assert selection_seeds and scoring_seeds and not selection_seeds & scoring_seeds
    assert len(scoring_seeds) == suite.seeds
    folders = [run.run_dir for _, run in selection + scoring]
    assert len(folders) == len(set(folders))


def test_the_suites_have_the_seeds_and_rates_the_issue_asks_for():
    quick, full = benchmark.SUITES["quick"], benchmark.SUITES["full"]
    assert quick.seeds == 3 and full.seeds >= 5
    transformer = next(s for s in settings("quick") if s.label == "lm-transformer")
    assert len(transformer.lrs) >= 5 and min(transformer.lrs) == 1e-3
    assert max(transformer.lrs) == 1e-1 and transformer.train.optimizer == "adamw"
    smoke = settings("smoke")
    assert smoke[0].label == "lm-transformer" and len(smoke[0].lrs) == 2


def test_norm_and_value_are_swept_over_a_quarter_one_and_four_times_the_profile():
    norm = next(f for f in benchmark.FAMILIES if f.name == "norm")
    value = next(f for f in benchmark.FAMILIES if f.name == "value")
    assert sorted(benchmark.Thresholds(2.0, 0.1).specs(norm)) == ["norm:0.5", "norm:2", "norm:8"]
    assert sorted(benchmark.Thresholds(2.0, 0.1).specs(value)) == [
        "value:0.025", "value:0.1", "value:0.4"]


def test_every_adaptive_strategy_has_its_default_and_one_alternative():
    for family in benchmark.FAMILIES:
        if family.name not in ("none", "norm", "value"):
            assert len(family.variants) == 2, family.name


def record(task: str, lr: float, strategy: str, spec: str, seed: int, stage: str, score: float,
           spikes: int = 0) -> dict:
    return {"task": task, "lr": lr, "strategy": strategy, "spec": spec, "seed": seed,
            "stage": stage, "score": score, "spikes": spikes, "diverged": False,
            "metric": score, "steps": 10, "clipped_steps": 0, "skipped_steps": 0}


def test_the_choice_sees_only_the_selection_runs():
    setting = settings("smoke")[1]
    norm = next(f for f in benchmark.FAMILIES if f.name == "norm")
    low, middle, high = sorted(THRESHOLDS.specs(norm), key=lambda s: float(s.split(":")[1]))
    lr = setting.lrs[0]
    records = [record(setting.label, lr, "norm", low, 1000, "selection", 0.3),
               record(setting.label, lr, "norm", middle, 1000, "selection", 0.2),
               record(setting.label, lr, "norm", high, 1000, "selection", 0.4),
               # a scoring run that would change the choice if it were seen
               record(setting.label, lr, "norm", low, 0, "scoring", 0.0)]
    chosen, entries = benchmark.choose_variants([setting], {setting.label: THRESHOLDS}, records)
    assert chosen[(setting.label, lr, "norm")] == middle
    (entry,) = [e for e in entries if e["strategy"] == "norm" and e["lr"] == lr]
    assert entry["candidates"][middle] == 0.2


TASK = {"task": "lm-transformer", "lrs": [0.01, 0.1], "higher_is_better": False,
        "initial_metric": 5.0}


def scoring(strategy: str, by_lr: dict[float, list[float]], spikes: int = 0) -> list[dict]:
    return [record("lm-transformer", lr, strategy, strategy, seed, "scoring", score, spikes)
            for lr, scores in by_lr.items() for seed, score in enumerate(scores)]


def claim_row(strategy: str, records: list[dict]) -> dict:
    sweep = benchmark_results.sweep_entries(records, TASK, ["none", "norm", strategy])
    (claim,) = [c for c in claims.CLAIMS if c.strategy == strategy]
    return claims.evaluate(claim, records, [TASK], sweep)


def test_a_claim_is_reproduced_when_the_whole_interval_favours_it():
    records = (scoring("none", {0.01: [2.0, 2.1, 2.2], 0.1: [5.0, 5.0, 5.0]})
               + scoring("agc", {0.01: [2.0, 2.1, 2.2], 0.1: [2.5, 2.6, 2.7]}))
    row = claim_row("agc", records)
    # sensitivities against the best mean, 2.1: none (0 + 2.9) / 2, agc (0 + 0.5) / 2
    assert row["answer"] == "reproduced" and row["effect_ci95"][0] > 0
    assert row["effect"] == pytest.approx((5.0 - 2.6) / 2)


def test_a_claim_is_not_reproduced_when_the_whole_interval_opposes_it():
    records = (scoring("norm", {0.01: [2.0, 2.0, 2.0], 0.1: [2.0, 2.0, 2.0]}, spikes=1)
               + scoring("adagc", {0.01: [2.0, 2.0, 2.0], 0.1: [2.0, 2.0, 2.0]}, spikes=4))
    row = claim_row("adagc", records)
    assert row["answer"] == "not reproduced" and row["effect"] == pytest.approx(-3.0)


def test_a_claim_is_inconclusive_when_the_interval_holds_zero():
    records = (scoring("norm", {0.01: [0, 4, 0], 0.1: [4, 0, 4]}, spikes=0)
               + scoring("spikeskip+norm", {0.01: [2.0] * 3, 0.1: [2.0] * 3}, spikes=0))
    for r in records:
        r["spikes"] = r["score"]
    row = claim_row("spikeskip+norm", records)
    assert row["answer"] == "inconclusive"
    assert row["effect_ci95"][0] < 0 < row["effect_ci95"][1]


def test_sensitivity_entries_group_strategies_and_say_when_nothing_separates_them():
    records = (scoring("none", {0.01: [2.0, 2.1, 2.2], 0.1: [5.0, 5.0, 5.0]})
               + scoring("norm", {0.01: [2.0, 2.1, 2.2], 0.1: [2.5, 2.6, 2.7]}))
    sweep = benchmark_results.sweep_entries(records, TASK, ["none", "norm"])
    entries = benchmark_results.sensitivity_entries(records, TASK, sweep)
    by_name = {e["strategy"]: e for e in entries}
    assert by_name["norm"]["lr_sensitivity"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert by_name["none"]["lr_sensitivity"] == pytest.approx(1.45)  # (0 + 2.9) / 2
    assert (by_name["norm"]["rank_group"], by_name["none"]["rank_group"]) == (1, 2)
    assert benchmark_results.separated(entries)
    same = scoring("none", {0.01: [2.0, 3.0]}) + scoring("norm", {0.01: [2.1, 2.9]})
    task = dict(TASK, lrs=[0.01])
    sweep = benchmark_results.sweep_entries(same, task, ["none", "norm"])
    assert not benchmark_results.separated(
        benchmark_results.sensitivity_entries(same, task, sweep))
