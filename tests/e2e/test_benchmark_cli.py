"""``gradclip benchmark --suite smoke`` end to end (fewer strategies and steps), and its resume."""

from __future__ import annotations

import json

import pytest

from gradclip.app.experiments import benchmark
from tests.e2e.cli import run_cli

PNG = b"\x89PNG\r\n\x1a\n"
SWEEP_KEYS = {"task", "strategy", "lr", "seeds", "diverged", "metric_mean", "metric_ci95",
              "spikes_mean"}


@pytest.fixture
def trimmed(monkeypatch):
    """The smoke suite with five strategy families (two with variants to choose from)."""
    pytest.importorskip("matplotlib")
    kept = ("none", "norm", "agc", "spikeskip+norm")
    monkeypatch.setattr(benchmark, "FAMILIES",
                        tuple(f for f in benchmark.FAMILIES if f.name in kept))
    tiny = benchmark.dataclasses.replace(benchmark.SUITES["smoke"], scale=0.005,
                                         transformer=(1, 32, 2, 20))
    monkeypatch.setitem(benchmark.SUITES, "smoke", tiny)


def run_smoke(out, capsys):
    code, stdout, stderr = run_cli(["benchmark", "--suite", "smoke", "--jobs", "2", "--out",
                                    out], capsys)
    assert code == 0, stderr
    return stdout


def test_smoke_suite_writes_results_report_and_figures(tmp_path, capsys, trimmed):
    out = tmp_path / "bench"
    stdout = run_smoke(out, capsys)
    results = json.loads((out / "results.json").read_text())
    assert [t["task"] for t in results["tasks"]] == ["lm-transformer", "adding-rnn"]
    assert all(len(t["lrs"]) == 2 for t in results["tasks"])
    assert len(results["sweep"]) == 2 * 2 * 4
    for entry in results["sweep"]:
        assert set(entry) >= SWEEP_KEYS
        low, high = entry["metric_ci95"]
        assert low <= entry["metric_mean"] <= high
    assert len(results["sensitivity"]) == 2 * 4
    assert all({"strategy", "task", "lr_sensitivity"} <= set(e) for e in results["sensitivity"])
    assert {c["strategy"] for c in results["claims"]} == {"norm", "agc", "spikeskip+norm"}
    report = (out / "report.md").read_text()
    for heading in ("## Claims", "### lm-transformer", "### adding-rnn", "| group | strategy |",
                    "| strategy | lr 0.001 | lr 0.1 |", "LR sensitivity = mean over the rates"):
        assert heading in report
    for figure in ("sweep.png", "losses.png", "spikes.png"):
        assert (out / figure).read_bytes()[:8] == PNG
        assert f"![{figure[:-4]}]({figure})" in report
    assert "scoring pass" in stdout and "claim norm" in stdout


def test_rerunning_a_half_finished_benchmark_trains_only_the_missing_runs(tmp_path, capsys,
                                                                         trimmed):
    out = tmp_path / "bench"
    run_smoke(out, capsys)
    (missing,) = list((out / "runs" / "adding-rnn" / "lr0.05").glob("none-seed0"))
    (missing / "summary.json").unlink()
    stdout = run_smoke(out, capsys)
    assert "finished earlier, kept" in stdout
    assert "lr0.05/none-seed0" in stdout
