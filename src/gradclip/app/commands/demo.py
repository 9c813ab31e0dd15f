"""``gradclip demo``: why clipping matters, on a vanilla RNN that explodes without it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gradclip.app.commands import options
from gradclip.app.cpus import parallel_jobs
from gradclip.app.experiments.demo_setting import EVAL_EVERY, STRATEGIES, TITLE
from gradclip.app.training.rundir import (
    claim_output_folder,
    json_safe,
    timestamped_dir,
    write_text,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a vanilla RNN with and without clipping and compare",
        formatter_class=options.HelpFormatter, description=__doc__.split("\n")[0].replace("``", "") + "\n\n" + TITLE)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/demo-<time>)")
    parser.add_argument("--steps", type=options.bounded("total_steps"), default=4000,
                        help="optimizer steps per run")
    parser.add_argument("--seeds", type=options.bounded("seeds"), default=3, help="seeds per strategy")
    parser.add_argument("--clips", type=options.label_list, default=",".join(STRATEGIES),
                        help="comma-separated clipping specs to compare")
    parser.add_argument("--workers", type=options.bounded("workers"), default=2,
                        help="runs trained in parallel, one CPU thread each (at most the "
                             "CPUs)")
    parser.add_argument("--quick", action="store_true",
                        help="a short check: 300 steps, 1 seed")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradclip.app.experiments import demo
    from gradclip.app.experiments.plots import plot_demo
    from gradclip.app.training.setup import clipper_from_spec

    strategies = tuple(args.clips)
    for spec in strategies:
        clipper_from_spec(spec)
    steps, seeds = (300, 1) if args.quick else (args.steps, args.seeds)
    args.workers = parallel_jobs(args.workers)  # one thread each: workers <= cores
    out = args.out or timestamped_dir("demo")
    claim_output_folder(out)
    print(f"{TITLE}\n{len(strategies)} strategies x {seeds} seeds, {steps} steps each, "
          f"{args.workers} at a time; runs in {out}")
    started = time.perf_counter()
    results = demo.run_demo(out, steps, seeds, strategies, args.workers)
    rows = demo.summary_rows(results, strategies)
    table = demo.format_table(rows)
    write_text(out / "demo.json", json.dumps(json_safe(rows), indent=2) + "\n")
    write_text(out / "table.txt", table + "\n")
    plot = plot_demo(results, strategies, TITLE, out / "demo.png")
    print(f"\n{table}\n\nMSE on 1,000 validation sequences, scored every {EVAL_EVERY} steps; "
          "final<0.01: at the last step; reached<0.01: at some evaluation (median first step).\n")
    print(demo.explanation(rows))
    print(f"\nplot: {plot}\ntotal time: {time.perf_counter() - started:.0f} s")
    return 0
