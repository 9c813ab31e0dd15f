"""``gradclip benchmark``: every clipping strategy on the same hard tasks, seeds and budget.

Suites: ``smoke`` (minutes, for tests and CI), ``quick`` (about 30 minutes on 2 cores, 3 seeds)
and ``full`` (hours). ``--out`` then holds ``report.md`` (a table per task: runs diverged, the
final metric, clip and skip rates, time per step against ``none``, a rank; then the ranks
across tasks, the command and the versions), ``results.json``, ``losses.png``,
``grad_norms.png``, ``ranks.png`` and every run folder. Rerunning into the same ``--out``
trains only the runs that did not finish; a non-empty ``--out`` is refused unless it holds
the ``.gradclip-benchmark`` marker that the command writes into every folder it creates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from gradclip.app.choices import SUITE_NAMES
from gradclip.app.commands import options
from gradclip.app.cpus import parallel_jobs, usable_cpus
from gradclip.app.errors import UserError
from gradclip.app.training.rundir import (
    claim_output_folder,
    json_safe,
    timestamped_dir,
    write_text,
)

# Written into every benchmark folder: only a folder holding it is resumed.
MARKER = ".gradclip-benchmark"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="run every clipping strategy on the same tasks and seeds, report",
        formatter_class=options.HelpFormatter, description=__doc__.split("\n")[0].replace(
            "``", "") + "\n\nexample:\n  gradclip benchmark --suite smoke --out runs/bench")
    parser.add_argument("--suite", choices=SUITE_NAMES, default="smoke",
                        help="smoke: minutes; quick: about 30 minutes on 2 cores; full: hours")
    parser.add_argument("--data", type=Path, default=None,
                        help="a toxic-comment CSV: adds the text task to the suite")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/benchmark-<suite>-<time>); an "
                             "existing one is resumed")
    parser.add_argument("--jobs", type=options.bounded("jobs"), default=min(2, usable_cpus()),
                        help="runs trained in parallel processes, one thread each (at most "
                             "the CPUs)")
    parser.add_argument("--seeds", type=options.bounded("seeds"), default=None,
                        help="seeds per run (default: the suite's)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradclip.app.experiments import benchmark, compare
    from gradclip.app.experiments.plots import plot_benchmark
    from gradclip.app.experiments.tables import aligned
    from gradclip.app.experiments.workers import worker_count

    suite = benchmark.SUITES[args.suite]
    if args.seeds is not None:
        suite = dataclasses.replace(suite, seeds=args.seeds)
    if args.data is not None and not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    args.jobs = parallel_jobs(args.jobs)  # one thread each: jobs x threads <= cores
    out = args.out or timestamped_dir(f"benchmark-{suite.name}")
    claim_output_folder(out, MARKER)
    started = time.perf_counter()
    settings = benchmark.hard_settings(suite, args.data)
    print(f"benchmark {suite.name}: {len(settings)} tasks x {len(benchmark.STRATEGIES)} "
          f"strategies x {suite.seeds} seed(s), at most {worker_count(args.jobs, args.jobs)} "
          f"at a time; output in {out}",
          flush=True)
    thresholds = {}
    for setting in settings:
        thresholds[setting.options.name] = found = benchmark.profile_thresholds(setting, out)
        print(f"profile {setting.options.name}: recommends norm {found.norm or 1.0:.3g}, "
              f"value {found.value or 0.01:.3g} ({found.note})", flush=True)
    points, keys = benchmark.plan(settings, thresholds, suite.seeds, out)
    grouped = compare.run_grid(points, keys, args.jobs, reuse_finished=True)
    results = benchmark.summarise(settings, thresholds, grouped)
    figures = plot_benchmark(out, results)
    command = "gradclip " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else \
        f"gradclip benchmark --suite {suite.name}"
    text = benchmark.report(suite, results, command, figures, time.perf_counter() - started,
                            benchmark.left_out_strategies())
    write_text(out / "report.md", text)
    write_text(out / "results.json", json.dumps(json_safe(benchmark.rows_json(results)),
                                                indent=2) + "\n")
    print(f"\n{aligned(benchmark.summary_table(results))}\n\nwrote {out / 'report.md'}, "
          f"results.json and {len(figures)} figures")
    return 0
