"""`python -m benchmarks.clip --quick` runs and writes every figure the README cites (no timing checks)."""

from __future__ import annotations

import json

import pytest

clip_benchmark = pytest.importorskip("benchmarks.clip")

MODELS = {"many_small_2000x1k", "lstm_lm_24x1M", "few_large_4x16M", "rnn_stack", "lstm_stack"}
CLIP_TIMINGS = {
    "read_pass", "torch_norm", "gradclip_norm", "gradclip_norm_flat", "gradclip_norm_flat_fast",
    "fused_clip", "fused_clip_fast",
    "torch_value", "gradclip_value", "gradclip_value_flat", "fused_step", "fused_step_clipped",
}
SPECS = [
    "none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1", "zclip", "adagc", "spikeskip",
    "spikeskip+norm:1.0", "agc:0.01+norm:1.0",
]
STEP_VARIANTS = {
    *SPECS, *(f"{spec} flat" for spec in SPECS), "norm:1.0 flat+fused", "monitor every=1",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "results.json"
    clip_benchmark.main(["--quick", "--repeats", "1", "--json", str(path)])
    return json.loads(path.read_text())


def test_quick_benchmark_writes_clip_medians_for_every_model_shape(results):
    by_model = results["clip"]["threads=1"]
    assert set(by_model) == MODELS
    for figures in by_model.values():
        assert set(figures["median_ms"]) == CLIP_TIMINGS
        assert all(value > 0 for value in figures["median_ms"].values())


def test_quick_benchmark_writes_the_ratios_the_targets_are_stated_in(results):
    ratios = results["clip"]["threads=1"]["many_small_2000x1k"]["ratios"]
    assert "torch_norm / gradclip_norm_flat" in ratios
    assert "(fused_step_clipped - fused_step) / read_pass" in ratios
    assert "gradclip_norm / torch_norm" in ratios


def test_quick_benchmark_writes_step_overhead_of_every_strategy_and_the_monitor(results):
    step = results["step"]["threads=1"]
    assert set(step["overhead_percent"]) == STEP_VARIANTS
    assert set(step["tail_overhead_percent"]) == STEP_VARIANTS
    assert {"baseline", "baseline fused-adam"} <= set(step["median_ms"])


def test_benchmark_records_the_command_and_machine(results):
    assert results["command"].startswith("python -m benchmarks.clip --quick")
    assert results["machine"]["torch"]


def test_step_benchmark_alone_writes_its_entry_and_keeps_the_others(tmp_path):
    step_benchmark = pytest.importorskip("benchmarks.step")
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"clip": {"kept": True}}))
    step_benchmark.main(["--quick", "--repeats", "1", "--json", str(path)])
    results = json.loads(path.read_text())
    assert results["clip"] == {"kept": True}
    step = results["step"]
    assert step["command"].startswith("python -m benchmarks.step --quick")
    assert set(step["threads=1"]["overhead_percent"]) == STEP_VARIANTS
    assert len(step["threads=1"]["load_average"]) == 3


def test_latency_benchmark_counts_the_collectives_of_both_libraries(tmp_path):
    latency_benchmark = pytest.importorskip("benchmarks.latency")
    path = tmp_path / "results.json"
    latency_benchmark.main(["--quick", "--latency-ms", "0,1", "--json", str(path)])
    rows = json.loads(path.read_text())["latency"]["rows"]
    assert {(row["layout"], row["latency_ms"]) for row in rows} == {
        (layout, ms) for layout in ("fsdp2 1-D", "fsdp x tp 2-D") for ms in (0.0, 1.0)}
    assert all(row["gradclip_collectives"] == 1 for row in rows)
    assert all(row["torch_collectives"] >= 1 for row in rows)
