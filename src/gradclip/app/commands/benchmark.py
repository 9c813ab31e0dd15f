"""``gradclip benchmark``: every clipping strategy on the same hard tasks, seeds and budget.

Suites: ``smoke`` (minutes, for tests and CI), ``quick`` (about half an hour on 2 cores, 3 seeds)
and ``full`` (about 40 hours, 5 seeds). Each task runs at a grid of learning rates; each strategy's
threshold or variant is chosen on selection seeds and scored on others. ``--out`` then holds
``results.json`` (every run, the sweep entries with bootstrap intervals, the learning-rate
sensitivity, loss spikes, the claims), ``report.md`` and its figures (``sweep.png``,
``losses.png``, ``spikes.png``) made from it, and every run folder. Rerunning into the same
``--out`` trains only the runs that did not finish.; a non-empty ``--out``
is refused unless it holds the ``.gradclip-benchmark`` marker that the command writes into
every folder it creates.
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
                        help="smoke: minutes; quick: about half an hour on 2 cores with "
                             "--jobs 2; full: about 40 hours")
    parser.add_argument("--data", type=Path, default=None,
                        help="a toxic-comment CSV: the transformer language model reads its comments (and 'full' adds the text-classification task)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/benchmark-<suite>-<time>); an "
                             "existing one is resumed")
    parser.add_argument("--jobs", type=options.bounded("jobs"), default=min(2, usable_cpus()),
                        help="runs trained in parallel processes, one thread each (at most "
                             "the CPUs)")
    parser.add_argument("--seeds", type=options.bounded("seeds"), default=None,
                        help="scoring seeds per rate (default: the suite's)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradclip.app.experiments import benchmark as bench
    from gradclip.app.experiments import (
        benchmark_plots,
        benchmark_report,
        benchmark_results,
        compare,
    )

    suite = bench.SUITES[args.suite]
    if args.seeds is not None:
        suite = dataclasses.replace(suite, seeds=args.seeds)
    if args.data is not None and not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    args.jobs = parallel_jobs(args.jobs)  # one thread each: jobs x threads <= cores
    out = args.out or timestamped_dir(f"benchmark-{suite.name}")
    claim_output_folder(out, MARKER)
    started = time.perf_counter()
    settings = bench.settings_for(suite, args.data)
    rates = sum(len(s.lrs) for s in settings)
    print(f"benchmark {suite.name}: {len(settings)} tasks, {rates} learning rates, "
          f"{len(bench.FAMILIES)} strategies, {suite.seeds} scoring seed(s) and "
          f"{suite.selection_seeds} selection seed(s); at most {args.jobs} at a time; output in "
          f"{out}", flush=True)
    thresholds, initial = {}, {}
    for setting in settings:
        thresholds[setting.label] = found = bench.profile_thresholds(setting, out)
        initial[setting.label] = bench.initial_metric(setting, out)
        print(f"profile {setting.label}: norm {found.norm or 1.0:.3g}, value "
              f"{found.value or 0.01:.3g} ({found.note}); untrained metric "
              f"{initial[setting.label]:.4g}", flush=True)
    by_label = {s.label: s for s in settings}

    def train(points: list, stage: str) -> list[dict]:
        grouped = compare.run_grid(points, [key for key, _ in points], args.jobs,
                                   reuse_finished=True)
        return [bench.run_record(key, runs[0], stage, initial[key[0]], by_label[key[0]])
                for key, runs in grouped.items()]

    print("selection pass: every variant on the selection seeds", flush=True)
    selection = train(bench.selection_plan(settings, thresholds, suite, out), "selection")
    chosen, choices = bench.choose_variants(settings, thresholds, selection)
    print("scoring pass: each family's chosen variant on the scoring seeds", flush=True)
    scoring = train(bench.scoring_plan(settings, chosen, suite, out), "scoring")
    tasks = [bench.task_entry(s, thresholds[s.label], initial[s.label]) for s in settings]
    command = "gradclip " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else \
        f"gradclip benchmark --suite {suite.name}"
    results = benchmark_results.build(
        selection + scoring, tasks, [f.name for f in bench.FAMILIES], suite=suite.name,
        notes=suite.notes, scoring_seeds=list(range(suite.seeds)),
        selection_seeds=list(bench.selection_seeds(suite)), choices=choices,
        command=command, versions=bench.versions(), left_out=bench.left_out_strategies(),
        elapsed_seconds=time.perf_counter() - started)
    write_text(out / "results.json", json.dumps(json_safe(results), indent=1) + "\n")
    figures = benchmark_plots.plot_all(out, results)
    write_text(out / "report.md", benchmark_report.report(results, [f.name for f in figures]))
    print(f"\n{benchmark_report.summary_text(results)}\n\nwrote {out / 'report.md'}, "
          f"results.json and {len(figures)} figures")
    return 0
