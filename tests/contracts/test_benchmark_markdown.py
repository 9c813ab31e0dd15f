"""The Markdown tables of `benchmarks.text` and `benchmarks.contention`, on hand-made figures."""

from __future__ import annotations

from benchmarks.markdown import contention_table, table, text_tables


def run(beside: int, wall: float, cpu: float) -> dict:
    return {"beside": beside, "torch_threads": 2, "wall_seconds": wall, "cpu_seconds": cpu,
            "training_seconds": wall / 2, "final_train_loss": 1.0561,
            "load_average_before": [0.5, 0.4, 0.3], "load_average_after": [2.25, 1.0, 0.5]}


def test_a_table_aligns_its_figures_right():
    assert table(["a", "b"], [["x", "1"]]).splitlines() == ["| a | b |", "| --- | ---: |",
                                                           "| x | 1 |"]


def test_contention_gives_each_busy_row_its_ratios_to_the_run_alone():
    text = contention_table({"command": "python -m benchmarks.contention --data d.csv",
                             "steps": 100, "rows": [run(0, 30.0, 36.0), run(2, 60.0, 36.0)]})
    assert "| alone | 0.5 → 2.2 | 2 | 30.0 | 15.0 | 36.0 | 1.0561 |" in text
    assert ("| beside 2 busy processes | 0.5 → 2.2 | 2 | 60.0 (2.00x) | 30.0 (2.00x) | "
            "36.0 (1.00x) | 1.0561 |") in text


def scores(mean: float, toxic: float) -> dict:
    return {"mean_roc_auc": mean, "per_label": {"toxic": {"roc_auc": toxic, "positives": 318}}}


def test_text_tables_give_each_seed_and_the_mean_of_each_label():
    results = [{"seed": seed, "model": scores(0.96 + seed / 100, 0.9), "validation_mean_roc_auc":
                0.969, "seconds": 120.0, "clipped_steps": 5, "steps": 678,
                "baseline": scores(0.95, 0.8 + seed / 10)} for seed in (0, 1)]
    text = text_tables("python -m benchmarks.text --data d.csv", results)
    assert "| 0 | 0.9600 | 0.9500 | +0.0100 | 0.969 | 2.0 | 5 of 678 |" in text
    assert "| mean | **0.9650** | 0.9500 | +0.0150 |" in text
    assert "| toxic | 318 | 0.900 | 0.850 |" in text
