"""Numbers in the docs never go stale: published run results come from the files
`make docs-figures` (scripts/docs_figures.py) generates, included into the pages as they are;
the prose around them quotes the demo's setting, never a run's result.

Covered: the demo section of docs/application.md (its table, explanation and time) and the
benchmark page (docs/benchmark/quick.md is the report of a real run, copied as is).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATED = DOCS / "generated" / "demo"
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?%?")
PROVENANCE_KEYS = {"command", "date", "gradclip", "torch", "python"}


def demo_section() -> str:
    text = (DOCS / "application.md").read_text(encoding="utf-8")
    start = text.index("## `gradclip demo`")
    return text[start:text.index("\n## ", start + 1)]


def prose(markdown: str) -> str:
    """The text a reader reads as prose: no code blocks, inline code, links or includes."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    markdown = SNIPPET.sub("", markdown)
    markdown = re.sub(r"`[^`]*`", "", markdown)
    return re.sub(r"\]\([^)]*\)", "]", markdown)


def setting_numbers() -> set[str]:
    """The demo's setting, as the prose writes it, each checked against the code."""
    from gradclip.app.experiments import demo_setting as setting
    from gradclip.app.tasks.adding import SUCCESS_MSE
    from gradclip.app.training.setup import WARMDOWN_FRACTION

    assert (setting.SEQ_LEN, setting.HIDDEN, setting.LR, setting.MOMENTUM, setting.BATCH,
            setting.EVAL_EVERY, SUCCESS_MSE) == (10, 64, 0.15, 0.9, 64, 100, 0.01)
    return {
        "10", "64", "0.15", "0.9", "100", "0.01",       # demo_setting, SUCCESS_MSE
        f"{1 - WARMDOWN_FRACTION:.0%}", "0",             # warmdown: constant for 80%, decay to 0
        "4,000", "3",                                    # gradclip demo's --steps, --seeds
        "1,000",                                         # the adding task's validation sequences
        "1", "0.167",                                    # predicting 1 always: MSE 1/6
    }


def test_the_demo_section_includes_the_generated_table_explanation_and_time():
    included = set(SNIPPET.findall(demo_section()))
    assert included == {f"docs/generated/demo/{name}"
                        for name in ("table.txt", "explanation.txt", "timing.txt")}
    assert all((ROOT / path).is_file() for path in included)


def test_the_demo_prose_quotes_no_number_of_its_own():
    quoted = set(NUMBER.findall(prose(demo_section())))
    assert quoted <= setting_numbers(), sorted(quoted - setting_numbers())


def test_the_generated_demo_records_its_command_versions_machine_threads_and_date():
    record = json.loads((GENERATED / "provenance.json").read_text(encoding="utf-8"))
    assert set(record) >= PROVENANCE_KEYS
    assert record["command"].startswith("gradclip demo --out ")
    assert "--steps" not in record["command"] and "--seeds" not in record["command"]
    assert record["cpu_model"] and record["torch_threads_per_run"] == [1]


def test_the_generated_table_is_the_one_the_run_wrote():
    rows = json.loads((GENERATED / "demo.json").read_text(encoding="utf-8"))
    table = (GENERATED / "table.txt").read_text(encoding="utf-8")
    assert [line.split()[0] for line in table.splitlines()[2:]] == [r["strategy"] for r in rows]
    assert all(row["seeds"] == 3 and row["steps_done"] == [4000] * 3 for row in rows
               if row["nonfinite_loss_steps"] == 0)


def test_the_published_benchmark_is_a_run_report_with_its_provenance():
    report = (DOCS / "benchmark" / "quick.md").read_text(encoding="utf-8")
    record = json.loads((DOCS / "benchmark" / "provenance.json").read_text(encoding="utf-8"))
    assert set(record) >= PROVENANCE_KEYS and record["command"] in report
    assert f"gradclip {record['gradclip']}, torch {record['torch']}" in report


def rate_forms(lr: float) -> set[str]:
    """``0.001`` and ``1e-3``: the two ways the page may write a rate."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return {f"{lr:g}", f"{mantissa}e{int(exponent)}"}


def benchmark_setting_numbers() -> set[str]:
    """Every number the benchmark page may quote, each taken from the code: the suites'
    rates, sizes, seeds and budgets, the statistics' constants, the papers' years."""
    from gradclip.app.experiments import benchmark, sweep_stats
    from gradclip.app.tasks.lm.task import VALIDATION_STREAMS

    numbers = {"2013", "2023", str(VALIDATION_STREAMS), str(benchmark.SELECTION_SEED_BASE),
               f"{sweep_stats.SPIKE_K:g}", str(sweep_stats.SPIKE_WINDOW),
               f"{sweep_stats.CONFIDENCE * 100:g}", "0", "0.1"}  # 0.1: the lm's val fraction
    numbers |= {f"{factor:g}" for factor in benchmark.THRESHOLD_FACTORS}
    for suite in benchmark.SUITES.values():
        numbers |= {str(suite.seeds), str(suite.selection_seeds)}
        numbers |= {f"{value:,}" for value in suite.transformer}
        for setting in benchmark.settings_for(suite, Path("x.csv")):
            numbers |= {str(len(setting.lrs)), str(setting.options.seq_len)}
            numbers |= {form for lr in setting.lrs for form in rate_forms(lr)}
    return numbers


def test_the_benchmark_page_quotes_only_the_suites_settings():
    page = (DOCS / "benchmark.md").read_text(encoding="utf-8")
    section = page[page.index("## `gradclip benchmark`"):]
    quoted = set(NUMBER.findall(prose(section)))
    assert quoted <= benchmark_setting_numbers(), sorted(quoted - benchmark_setting_numbers())


def test_docs_figures_regenerates_the_demo_files(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_figures.py"), "--only", "demo",
                    "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
                    "--steps", "20", "--seeds", "1"], check=True, capture_output=True)
    generated = tmp_path / "docs" / "generated" / "demo"
    assert {p.name for p in generated.iterdir()} == {
        "table.txt", "explanation.txt", "timing.txt", "demo.json", "provenance.json"}
    assert (tmp_path / "docs" / "demo.png").is_file()


PERFORMANCE_TABLES = {"clip": "benchmarks.clip", "step": "benchmarks.step",
                      "latency": "benchmarks.latency", "contention": "benchmarks.contention"}


def included(page: str) -> set[str]:
    return set(SNIPPET.findall((DOCS / page).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", list(PERFORMANCE_TABLES))
def test_the_performance_page_includes_each_generated_table_with_its_provenance(name):
    generated = "docs/generated/performance"
    assert {f"{generated}/{name}.md", f"{generated}/{name}.timing.txt"} <= included(
        "performance.md")
    record = json.loads((ROOT / generated / f"{name}.provenance.json").read_text(
        encoding="utf-8"))
    assert set(record) >= PROVENANCE_KEYS
    assert record["command"].startswith(f"python -m {PERFORMANCE_TABLES[name]} ")
    table = (ROOT / generated / f"{name}.md").read_text(encoding="utf-8")
    assert table.startswith(f"`python -m {PERFORMANCE_TABLES[name]} ")


def text_results() -> list[dict]:
    return json.loads((GENERATED.parent / "text" / "results.json").read_text(
        encoding="utf-8"))["results"]


def test_the_text_page_includes_the_table_its_results_give():
    from benchmarks.markdown import text_tables

    assert {"docs/generated/text/measured.md", "docs/generated/text/measured.timing.txt"} <= \
        included("text.md")
    record = json.loads((GENERATED.parent / "text" / "measured.provenance.json").read_text(
        encoding="utf-8"))
    command = record["command"].removesuffix(" --markdown docs/generated/text/measured.md")
    table = (GENERATED.parent / "text" / "measured.md").read_text(encoding="utf-8")
    assert table.rstrip("\n") == text_tables(record["command"], text_results())
    assert command.startswith("python -m benchmarks.text --data ../shared/data/")


def test_the_readme_quotes_the_text_figures_the_generated_results_give():
    """README.md cannot include a file (GitHub shows it as written), so its figures are
    checked against the published results instead."""
    results = text_results()
    model = [run["model"]["mean_roc_auc"] for run in results]
    baseline = [run["baseline"]["mean_roc_auc"] for run in results]
    ahead = sum(m > b for m, b in zip(model, baseline, strict=True))
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"scores {sum(model) / len(model):.3f} mean ROC-AUC over the 6 labels "
            f"({len(model)} seeds; {min(model):.3f}–{max(model):.3f}), against "
            f"{sum(baseline) / len(baseline):.3f} for word+char TF-IDF") in readme
    assert f"ahead on {ahead} of the {len(model)} seeds" in readme
