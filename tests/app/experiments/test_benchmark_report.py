"""The benchmark report's "In short" section: generated from results.json, never hand-written."""

from __future__ import annotations

from gradclip.app.experiments.benchmark_report import in_short


def entry(task: str, strategy: str, group: int, sensitivity: float, diverged: int = 0) -> dict:
    return {"task": task, "strategy": strategy, "rank_group": group,
            "lr_sensitivity": sensitivity, "diverged": diverged}


def results() -> dict:
    return {
        "tasks": [{"task": "lm-transformer"}, {"task": "adding-rnn"}],
        "sensitivity": [
            entry("lm-transformer", "none", 2, 0.5), entry("lm-transformer", "zclip", 1, 0.2),
            entry("lm-transformer", "agc", 1, 0.1), entry("lm-transformer", "norm", 2, 0.4),
            entry("adding-rnn", "none", 1, 0.3, diverged=2), entry("adding-rnn", "agc", 1, 0.2)],
        "claims": [{"strategy": "agc", "answer": "reproduced"},
                   {"strategy": "zclip", "answer": "inconclusive"},
                   {"strategy": "adagc", "answer": "inconclusive"}]}


def test_in_short_names_the_first_group_in_order_and_where_none_lands():
    lines = in_short(results())
    transformer = next(line for line in lines if "lm-transformer" in line)
    assert "`agc`, `zclip`;" in transformer  # by sensitivity, lowest first
    assert "`none` with 1 other strategies in group 2 of 2" in transformer
    assert "no run diverged at any rate" in transformer


def test_in_short_says_when_nothing_separates_the_strategies():
    adding = next(line for line in in_short(results()) if "adding-rnn" in line)
    assert "nothing separates the strategies" in adding


def test_in_short_groups_the_claims_by_answer():
    claims = next(line for line in in_short(results()) if "Claims" in line)
    assert claims == "- **Claims** (3): reproduced: `agc`; inconclusive: `zclip`, `adagc`."
