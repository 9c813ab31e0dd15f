"""`python -m benchmarks.clip --quick` runs and writes every figure the README cites (no timing
checks), and the Markdown tables the performance page includes."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

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
    clip_benchmark.main(["--quick", "--repeats", "1", "--json", str(path),
                         "--markdown", str(path.with_name("clip.md"))])
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


def test_clip_markdown_has_a_median_and_a_ratio_table_per_thread_count(results, tmp_path):
    from benchmarks.markdown import clip_tables

    text = clip_tables(results)
    assert text.startswith(f"`{results['command']}`, cpu time, load average ")
    assert text.count("| read pass (`buffer.sum()`) |") == 1
    assert text.count("| ratio (threads=1) |") == 1
    figure = results["clip"]["threads=1"]["many_small_2000x1k"]["ratios"]["gradclip_norm / torch_norm"]
    assert f"| drop-in `clip_grad_norm_`: gradclip / torch | {figure:.2f} |" in text


def test_benchmark_records_the_command_and_machine(results):
    assert results["command"].startswith("python -m benchmarks.clip --quick")
    assert results["machine"]["torch"]


def test_step_benchmark_alone_writes_its_entry_and_keeps_the_others(tmp_path):
    step_benchmark = pytest.importorskip("benchmarks.step")
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"clip": {"kept": True}}))
    step_benchmark.main(["--quick", "--repeats", "1", "--json", str(path),
                         "--markdown", str(tmp_path / "step.md")])
    results = json.loads(path.read_text())
    table = (tmp_path / "step.md").read_text()
    overhead = results["step"]["threads=1"]["overhead_percent"]
    tail = results["step"]["threads=1"]["tail_overhead_percent"]
    assert f"| `zclip` | {overhead['zclip']:+.1f} / {tail['zclip']:+.1f} |" in table
    assert results["clip"] == {"kept": True}
    step = results["step"]
    assert step["command"].startswith("python -m benchmarks.step --quick")
    assert set(step["threads=1"]["overhead_percent"]) == STEP_VARIANTS
    assert len(step["threads=1"]["load_average"]) == 3


def test_latency_benchmark_counts_the_collectives_of_both_libraries(tmp_path):
    latency_benchmark = pytest.importorskip("benchmarks.latency")
    path = tmp_path / "results.json"
    latency_benchmark.main(["--quick", "--latency-ms", "0,1", "--json", str(path),
                            "--markdown", str(tmp_path / "latency.md")])
    rows = json.loads(path.read_text())["latency"]["rows"]
    assert (tmp_path / "latency.md").read_text().count("| fsdp x tp 2-D, 4 ranks | 1 ms |") == 1
    assert {(row["layout"], row["latency_ms"]) for row in rows} == {
        (layout, ms) for layout in ("fsdp2 1-D", "fsdp x tp 2-D") for ms in (0.0, 1.0)}
    assert all(row["gradclip_collectives"] == 1 for row in rows)
    assert all(row["torch_collectives"] >= 1 for row in rows)


def test_contention_benchmark_times_the_run_alone_and_beside_busy_processes(tmp_path):
    contention = pytest.importorskip("benchmarks.contention")
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "toxic_comments.csv"
    if not data.is_file():
        pytest.skip("../shared/data/toxic_comments.csv is not beside the repository")
    small = tmp_path / "small.csv"
    with data.open(encoding="utf-8", newline="") as source, \
            small.open("w", encoding="utf-8", newline="") as target:
        csv.writer(target).writerows(itertools.islice(csv.reader(source), 301))
    payload = contention.main(["--data", str(small), "--steps", "2", "--busy", "1",
                               "--out", str(tmp_path / "runs"), "--json",
                               str(tmp_path / "results.json"),
                               "--markdown", str(tmp_path / "contention.md")])
    alone, busy = payload["rows"]
    assert (alone["beside"], busy["beside"]) == (0, 1)
    assert alone["final_train_loss"] == busy["final_train_loss"]  # the same run, only slower
    assert "| beside 1 busy processes |" in (tmp_path / "contention.md").read_text()
    assert not any("while time.monotonic()" in line for line in processes())


def processes() -> list[str]:
    """Every process's command line (Linux), to find a busy process left behind."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().decode(errors="replace"))
        except OSError:
            continue
    return lines
