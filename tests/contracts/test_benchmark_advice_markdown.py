"""``benchmarks.advice --markdown``: the table the monitor page includes, made from the rows."""

from __future__ import annotations

from benchmarks.advice import advice_markdown


def row(spec: str, recommended: bool, diverged: int, within: bool) -> dict:
    best = {"strategy": "agc", "metric_ci95": [4.19, 4.27]}
    return {"setting": "lm-transformer", "spec": spec, "recommended": recommended, "seeds": 3,
            "success": None, "diverged": diverged, "metric_name": "bits_per_char",
            "metric": [4.2, 4.25, 4.22], "verdict": "healthy 3/3", "within_best": within,
            "capped_mean": 4.223, "best": best}


def result(holds: bool) -> dict:
    return {"advice": {"lm-transformer": {"lr": 0.03, "kept_steps": 80, "regime": "stable",
                                          "specs": ["agc:0.01"]}},
            "rows": [row("agc:0.01", True, 0, holds), row("norm:1.8", False, 0, False)],
            "holds": holds}


def test_the_markdown_names_the_profile_the_table_and_the_verdict():
    text = advice_markdown(result(True))
    assert text.startswith("- `lm-transformer` at lr 0.03: the unclipped profile (80 steps "
                           "kept) was *stable*; recommended: `agc:0.01`")
    assert "| lm-transformer | agc:0.01 | yes | — | 0/3 |" in text
    assert "yes (4.223 vs agc [4.19, 4.27])" in text
    assert text.rstrip().endswith("**holds**.")


def test_a_failed_check_says_it_does_not_hold():
    assert advice_markdown(result(False)).rstrip().endswith("**does not hold**.")
