"""``gradclip compare``: the same task and seeds under several clipping specs, side by side.

Every combination of ``--models`` x ``--seq-lens`` x ``--lrs`` x ``--clips`` x seeds is an
ordinary training run under ``--out/runs/``; ``--out`` then holds ``report.md`` (the table:
mean ± std over seeds of the final validation loss and metric, success rate, divergence
count, clip rate, median largest gradient norm, the monitor's final verdict, seconds per
run), ``results.json``, and the figures ``losses.png``, ``grad_norms.png``, ``layer_norms.png``
(and ``success.png`` over sequence lengths when several are given).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from gradclip.app import comparison
from gradclip.app.cli import HelpFormatter
from gradclip.app.clipping import check_spec
from gradclip.app.commands import argtypes
from gradclip.app.commands.train import (
    add_model_options,
    add_optimization_options,
    add_task_options,
)
from gradclip.app.errors import UserError
from gradclip.app.models import CELLS
from gradclip.app.run_dir import json_safe, timestamped_dir
from gradclip.app.tasks import task_class

DEFAULT_CLIPS = "none,norm:1.0,value:0.5,agc:0.01,autoclip:0.1,zclip"
DEFAULT_STEPS = 1000


def comma_list(kind: type, name: str):
    """argparse type: a comma-separated list of ``kind`` values, each checked."""
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {name}")
        return [kind(item) for item in items]
    return parse


def model_name(text: str) -> str:
    if text not in CELLS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from "
                                         f"{', '.join(CELLS)}")
    return text


def clip_list(text: str) -> list[str]:
    """Specs separated by commas; a comma inside ``name:key=value,key=value`` stays in it."""
    specs: list[str] = []
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        if specs and "=" in part and ":" not in part:
            specs[-1] += "," + part
        else:
            specs.append(part)
    if not specs:
        raise argparse.ArgumentTypeError("expected comma-separated clip specs")
    for spec in specs:
        try:
            check_spec(spec)
        except UserError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return specs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="train the same task under several clipping specs and seeds, report",
        formatter_class=HelpFormatter, description=__doc__.split("\n")[0] + (
            "\n\nexample:\n  gradclip compare --task adding --seq-len 10 --model rnn --lr 0.15 "
            f"--clips {DEFAULT_CLIPS} --seeds 3 --out runs/compare"))
    add_task_options(parser)
    add_model_options(parser)
    add_optimization_options(parser)
    group = parser.add_argument_group("comparison")
    group.add_argument("--clips", type=clip_list, default=DEFAULT_CLIPS,
                       help="comma-separated clipping specs to compare")
    group.add_argument("--seeds", type=argtypes.positive_int, default=3,
                       help="seeds per setting: --seed, --seed + 1, ...")
    group.add_argument("--seed", type=int, default=0, help="first seed")
    group.add_argument("--seq-lens", type=comma_list(argtypes.positive_int, "lengths"),
                       default=None, help="comma-separated sequence lengths (default: --seq-len)")
    group.add_argument("--lrs", type=comma_list(argtypes.positive_float, "learning rates"),
                       default=None, help="comma-separated learning rates (default: --lr)")
    group.add_argument("--models", type=comma_list(model_name, "models"), default=None,
                       help="comma-separated models, e.g. rnn,lstm (default: --model)")
    group.add_argument("--jobs", type=argtypes.positive_int, default=min(2, os.cpu_count() or 1),
                       help="runs trained in parallel processes")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/compare-<task>-<time>)")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    group.add_argument("--threads", type=argtypes.positive_int, default=1,
                       help="CPU threads per run")
    group.add_argument("--log-every", type=argtypes.nonnegative_int, default=50,
                       help="per-layer norms and monitor report every N steps (0: never)")
    group.add_argument("--eval-every", type=argtypes.nonnegative_int, default=0,
                       help="score the validation set every N steps (0: only at the end)")
    parser.set_defaults(run=run, steps=DEFAULT_STEPS)
    for action in parser._actions:
        if action.dest == "steps":
            action.help = "optimizer steps per run"


def complete(args: argparse.Namespace) -> None:
    """Fill the grid lists from the single-valued options, and the output folder."""
    if args.task == "text" and args.data is None:
        raise UserError("--task text needs --data CSV (comment_text plus label columns)")
    if args.epochs is not None:  # --epochs replaces the default --steps (text task)
        args.steps = None
    args.models = args.models or [args.model]
    args.lrs = args.lrs or [args.lr]
    args.seq_lens = args.seq_lens or [args.seq_len]
    args.out = args.out or timestamped_dir(f"compare-{args.task}")
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"--out {args.out} is not empty; choose a new folder")
    args.out.mkdir(parents=True, exist_ok=True)


def varying(args: argparse.Namespace) -> list[str]:
    """The grid dimensions with more than one value (they label the rows), clip always."""
    dims = [("model", args.models), ("seq_len", args.seq_lens), ("lr", args.lrs)]
    return [name for name, values in dims if len(values) > 1] + ["clip"]


def run(args: argparse.Namespace) -> int:
    complete(args)
    settings = comparison.grid(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    metric = task_class(args.task).metric_name
    print(f"{len(settings)} settings x {len(seeds)} seeds = {len(settings) * len(seeds)} runs "
          f"of {args.steps} steps, {args.jobs} at a time; output in {args.out}", flush=True)
    started = time.perf_counter()
    grouped = comparison.run_grid(args, settings, seeds, args.jobs)
    rows = [comparison.row(s, results, metric) for s, results in grouped.items()]
    labels = varying(args)
    table = comparison.markdown_table(rows, metric, labels)
    elapsed = time.perf_counter() - started
    figures = write_figures(args, grouped, labels)
    write_report(args, table, figures, elapsed, metric)
    (args.out / "results.json").write_text(json.dumps(json_safe(
        [{**r, "setting": r["setting"].__dict__} for r in rows]), indent=2) + "\n")
    print(f"\n{table}\n\nwrote {args.out / 'report.md'} and {len(figures)} figures "
          f"in {elapsed:.0f} s")
    return 0


def write_figures(args: argparse.Namespace, grouped: dict, labels: list[str]) -> list[Path]:
    from gradclip.app.plots import plot_compare

    return plot_compare(args.out, grouped, labels)


def write_report(args: argparse.Namespace, table: str, figures: list[Path], elapsed: float,
                 metric: str) -> None:
    criterion = task_class(args.task).success_criterion
    lines = [
        f"# gradclip compare: {args.task}",
        "",
        f"Task {args.task}, models {', '.join(args.models)}, sequence lengths "
        f"{', '.join(str(t) for t in args.seq_lens)}, learning rates "
        f"{', '.join(f'{lr:g}' for lr in args.lrs)}, optimizer {args.optimizer} "
        f"(momentum {args.momentum}), batch {args.batch_size}, hidden {args.hidden_size}, "
        f"{args.steps} steps, seeds {args.seed}..{args.seed + args.seeds - 1}. "
        f"Wall time {elapsed:.0f} s with {args.jobs} parallel runs.",
        "",
        f"Success: {criterion}. Diverged: the loss became NaN/Inf, or the final validation "
        f"loss exceeds {comparison.DIVERGENCE_FACTOR:g}x the first training loss. Clip rate: "
        f"share of steps the clipper changed the gradient. Monitor verdict: the most common "
        f"verdict of the gradient monitor on each run's final step over the seeds (time "
        f"profiles measured every {args.log_every} steps).",
        "",
        table,
        "",
    ]
    lines += [f"![{path.stem}]({path.name})" for path in figures]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
