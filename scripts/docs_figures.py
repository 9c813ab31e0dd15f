"""Regenerate what the docs publish from real runs: ``make docs-figures``.

    python scripts/docs_figures.py                     # all of them, in this order
    python scripts/docs_figures.py --only demo         # the demo alone (a few minutes)
    python scripts/docs_figures.py --only benchmark    # the quick suite (about half an hour on 2 cores)
    python scripts/docs_figures.py --only advice       # benchmarks.advice (about 4 minutes)
    python scripts/docs_figures.py --only performance  # clip, step, latency, contention (~10 min)
    python scripts/docs_figures.py --only text         # benchmarks.text, 3 seeds (~10 minutes)

Each target runs the real ``gradclip`` command into ``runs/docs-figures/<target>`` and copies
what the docs show into ``docs/`` (``--docs DIR`` elsewhere), with a ``provenance.json``
beside it: the command, the versions of gradclip, torch and Python, the machine, the date and
the wall time, the CPU model and the torch threads each run used. The pages include the generated tables and explanations (the ``--8<--`` lines,
pymdownx.snippets), and ``tests/contracts/test_docs_numbers.py`` checks that the prose around
them quotes no run number of its own, so a rerun can never leave a page stale.

``--steps`` and ``--seeds`` shorten the demo (for the test of this script); the published
figures come from the defaults.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("demo", "benchmark", "advice", "performance", "text")
TOXIC_COMMENTS = ROOT.parent / "shared" / "data" / "toxic_comments.csv"


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``'s model name on Linux), as far as it is known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_threads(out: Path) -> list[int]:
    """The torch thread counts the runs under ``out`` trained with (their ``config.json``)."""
    counts = set()
    for config in out.rglob("config.json"):
        try:
            counts.add(int(json.loads(config.read_text())["train"]["threads"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(counts)


def provenance(command: list[str], started: float, wall_seconds: float) -> dict[str, object]:
    """What produced a generated file: command (as shown), versions, machine, date, wall time."""
    return {
        "command": shlex.join(command),
        "date": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "gradclip": metadata.version("gradclip"),
        "torch": metadata.version("torch"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def run_python(argv: list[str], shown_as: list[str]) -> tuple[str, dict[str, object]]:
    """Run ``python ARGV`` (its output streams through); its stdout and provenance.

    ``shown_as`` is the command as the docs print it (``gradclip ...``, ``python -m ...``).
    """
    started = time.time()
    print("$ " + shlex.join(shown_as), flush=True)
    lines = []
    with subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT) as process:
        assert process.stdout is not None, "stdout is a pipe"
        for line in process.stdout:  # each progress line as it comes
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if process.returncode != 0:
        raise SystemExit(f"docs_figures: {shlex.join(shown_as[:2])} failed "
                         f"(exit {process.returncode})")
    return "".join(lines), provenance(shown_as, started, time.time() - started)


def run_gradclip(command: list[str]) -> tuple[str, dict[str, object]]:
    """Run ``gradclip COMMAND``; its stdout and provenance."""
    return run_python(["-m", "gradclip", *command], ["gradclip", *command])


def shown(path: Path) -> str:
    """``path`` as the command shows it: relative to the repository (``../shared/...`` for
    the data beside it), so that no published command names this machine's folders."""
    return os.path.relpath(path, ROOT)


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def demo(runs: Path, docs: Path, steps: int | None, seeds: int | None) -> None:
    """``gradclip demo``: docs/demo.png, and the table, explanation and numbers it printed."""
    out = runs / "demo"
    if out.exists():
        shutil.rmtree(out)
    command = ["demo", "--out", shown(out)]
    command += ["--steps", str(steps)] if steps else []
    command += ["--seeds", str(seeds)] if seeds else []
    stdout, record = run_gradclip(command)
    record["torch_threads_per_run"] = run_threads(out)
    generated = fresh(docs / "generated" / "demo")
    shutil.copy(out / "demo.png", docs / "demo.png")
    shutil.copy(out / "table.txt", generated / "table.txt")
    shutil.copy(out / "demo.json", generated / "demo.json")
    lesson = stdout[stdout.index("How to read this"):stdout.index("\nplot: ")].rstrip()
    (generated / "explanation.txt").write_text(lesson + "\n", encoding="utf-8")
    (generated / "timing.txt").write_text(
        f"{record['wall_seconds']:.0f} s on {record['cpu_count']} cores of {record['cpu_model']}, "
        f"torch threads per run {threads(record)} (load average "
        f"{record['load_average_at_start'][0]:.1f} at the start), {record['date'][:10]}\n",
        encoding="utf-8")
    write_json(generated / "provenance.json", record)


def threads(record: dict[str, object]) -> str:
    return "/".join(str(count) for count in record["torch_threads_per_run"]) or "unknown"


STEP_SPECS = ("none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1", "zclip", "adagc",
              "spikeskip+norm:1.0")


def step_overhead(runs: Path) -> dict[str, object]:
    """Each strategy's step overhead from ``python -m benchmarks.step --threads 1``."""
    path = runs / "step.json"
    command = [sys.executable, "-m", "benchmarks.step", "--threads", "1", "--json", str(path)]
    print("$ python -m benchmarks.step --threads 1", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    measured = json.loads(path.read_text(encoding="utf-8"))["step"]
    medians = measured["threads=1"]["median_ms"]
    return {"command": "python -m benchmarks.step --threads 1",
            "note": f"the LSTM text model, 1 thread, load average "
                    f"{measured['threads=1']['load_average'][0]:.1f}",
            "overhead": {spec: medians[spec] / medians["baseline"] - 1 for spec in STEP_SPECS
                         if spec in medians}}


def benchmark(runs: Path, docs: Path) -> None:
    """``gradclip benchmark --suite quick``: docs/benchmark/quick.md, its figures and results,
    with the step overhead of ``benchmarks.step`` added to the report."""
    from gradclip.app.experiments.benchmark_report import report

    out = runs / "bench-quick"
    command = ["benchmark", "--suite", "quick", "--jobs", "2", "--out", shown(out)]
    if TOXIC_COMMENTS.is_file():
        command[3:3] = ["--data", shown(TOXIC_COMMENTS)]
    _, record = run_gradclip(command)
    record["torch_threads_per_run"] = run_threads(out)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["step_overhead"] = step_overhead(runs)
    write_json(out / "results.json", results)
    figures = sorted(path.name for path in out.glob("*.png"))
    (out / "report.md").write_text(report(results, figures), encoding="utf-8")
    published = docs / "benchmark"
    fresh(published)
    shutil.copy(out / "report.md", published / "quick.md")
    for name in ["results.json", *figures]:
        shutil.copy(out / name, published / name)
    write_json(published / "provenance.json", record)


ADVICE_RUNS = (  # (name, arguments): the recurrent settings at their reference rates, then
    ("recurrent", ["--tasks", "readme,adding-rnn,temporal-order-rnn,lm-rnn"]),  # the small
    ("transformer-lr0.03", ["--tasks", "lm-transformer", "--lr", "0.03"]),  # GPT where the
    ("transformer-lr0.1", ["--tasks", "lm-transformer", "--lr", "0.1"]),  # unclipped run spikes
)


def generate(generated: Path, name: str, module: str, arguments: list[str],
             how: str) -> None:
    """Run ``python -m MODULE ARGUMENTS --markdown generated/NAME.md``; beside the table it
    writes, ``NAME.provenance.json`` and ``NAME.timing.txt`` (command, time, machine, load,
    date: what the page shows above the table). ``how`` says how the runs used the CPUs."""
    command = ["-m", module, *arguments, "--markdown", shown(generated / f"{name}.md")]
    _, record = run_python(command, ["python", *command])
    write_json(generated / f"{name}.provenance.json", record)
    (generated / f"{name}.timing.txt").write_text(
        f"`{record['command']}`: {record['wall_seconds']:.0f} s on "
        f"{record['cpu_count']} cores of {record['cpu_model']}, {how} (load average "
        f"{record['load_average_at_start'][0]:.1f} at the start), {record['date'][:10]}\n",
        encoding="utf-8")


def missing_data() -> str:
    return f"{shown(TOXIC_COMMENTS)} is not there to rerun it"


def data_arguments() -> list[str]:
    return ["--data", shown(TOXIC_COMMENTS)] if TOXIC_COMMENTS.is_file() else []


def advice(runs: Path, docs: Path) -> None:
    """``python -m benchmarks.advice``: does ``gradclip profile``'s recommendation hold?
    docs/generated/advice/<name>.md, checked against the published benchmark's intervals."""
    generated = fresh(docs / "generated" / "advice")
    published = docs / "benchmark" / "results.json"
    for name, arguments in ADVICE_RUNS:
        out = runs / "advice" / name
        generate(generated, name, "benchmarks.advice",
                 [*arguments, "--benchmark", shown(published), "--out", shown(out),
                  "--json", shown(out / "advice.json"), *data_arguments()],
                 "one run at a time on one thread")


def performance(runs: Path, docs: Path) -> None:
    """The performance page's tables: the clip alone (``benchmarks.clip``), every strategy's
    step overhead (``benchmarks.step``), collectives under latency (``benchmarks.latency``)
    and the default text run on a busy machine (``benchmarks.contention``, with the data)."""
    generated = docs / "generated" / "performance"  # kept: contention needs the data
    generated.mkdir(parents=True, exist_ok=True)
    results = shown(runs / "performance" / "results.json")
    generate(generated, "clip", "benchmarks.clip",
             ["--threads", "1", "--no-step", "--json", results], "one thread")
    generate(generated, "step", "benchmarks.step", ["--threads", "1", "--json", results],
             "one thread")
    generate(generated, "latency", "benchmarks.latency", ["--json", results],
             "gloo processes of one thread each")
    if not TOXIC_COMMENTS.is_file():
        print(f"docs_figures: the contention table is kept as published ({missing_data()})")
        return
    generate(generated, "contention", "benchmarks.contention",
             [*data_arguments(), "--out", shown(runs / "contention"), "--json", results],
             "the run's own thread choice")


def text(runs: Path, docs: Path) -> None:
    """The text page's measured table: ``benchmarks.text`` on the toxic-comment CSV
    (3 split seeds; the default text run against TF-IDF + LR on the last 1,000 rows)."""
    if not TOXIC_COMMENTS.is_file():
        print(f"docs_figures: the text tables are kept as published ({missing_data()})")
        return
    generated, out = fresh(docs / "generated" / "text"), fresh(runs / "text")
    generate(generated, "measured", "benchmarks.text",
             [*data_arguments(), "--seeds", "0,1,2", "--out", shown(out)],
             "one run at a time, each with the text task's threads")
    shutil.copy(out / "results.json", generated / "results.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=TARGETS, action="append",
                        help="regenerate this target only (repeatable; default: all)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "docs-figures",
                        help="where the runs are trained")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="the docs folder to write into")
    parser.add_argument("--steps", type=int, default=None, help="demo steps (tests only)")
    parser.add_argument("--seeds", type=int, default=None, help="demo seeds (tests only)")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    for target in args.only or TARGETS:
        if target == "demo":
            demo(args.runs.resolve(), args.docs, args.steps, args.seeds)
        else:
            {"benchmark": benchmark, "advice": advice, "performance": performance,
             "text": text}[target](args.runs.resolve(), args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
