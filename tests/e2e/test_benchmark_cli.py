"""``gradclip benchmark --suite smoke`` end to end (a trimmed grid), and its resume."""

from __future__ import annotations

import json

import pytest

from gradclip.app.experiments import benchmark
from tests.e2e.cli import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trimmed(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(benchmark, "STRATEGIES", ("none", "norm:{norm}", "value:{value}"))
    tiny = benchmark.dataclasses.replace(benchmark.SUITES["smoke"], scale=0.01)
    monkeypatch.setitem(benchmark.SUITES, "smoke", tiny)


def test_smoke_suite_writes_tables_figures_and_results(tmp_path, capsys, trimmed):
    out = tmp_path / "bench"
    code, stdout, stderr = run_cli(["benchmark", "--suite", "smoke", "--jobs", "1", "--out",
                                    out], capsys)
    assert code == 0, stderr
    report = (out / "report.md").read_text()
    for task in ("## adding", "## temporal-order", "## lm", "## Summary across tasks"):
        assert task in report
    assert "| rank | strategy | diverged |" in report and "gradclip benchmark" in report
    for figure in ("losses.png", "grad_norms.png", "ranks.png"):
        assert (out / figure).read_bytes()[:8] == PNG
    results = json.loads((out / "results.json").read_text())
    assert [task["task"] for task in results] == ["adding", "temporal-order", "lm"]
    assert [len(task["rows"]) for task in results] == [3, 3, 3]
    assert "[9/9]" in stdout


def test_rerunning_a_half_finished_benchmark_trains_only_the_missing_runs(tmp_path, capsys,
                                                                         trimmed):
    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", "smoke", "--jobs", "1", "--out", out]
    assert run_cli(argv, capsys)[0] == 0
    (missing,) = list((out / "runs" / "lm").glob("none-seed0"))
    (missing / "summary.json").unlink()
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0
    assert "[8/9] finished earlier, kept" in stdout
    assert "[9/9] lm/none-seed0" in stdout
