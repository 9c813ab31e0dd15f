"""``gradclip compare``: the same task and seeds under several clipping specs, side by side.

Every combination of ``--models`` x ``--seq-lens`` x ``--lrs`` x ``--clips`` x seeds is an
ordinary training run under ``--out/runs/``; ``--out`` then holds ``report.md`` (the table:
mean ± std over seeds of the final validation loss and metric, success rate, divergence
count, clip rate, median largest gradient norm, the run verdict (most common over the
seeds), seconds per run), ``results.json``, and the figures ``losses.png``, ``grad_norms.png``, ``layer_norms.png``
(and ``success.png`` over sequence lengths when several are given).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gradclip.app.commands import options
from gradclip.app.cpus import parallel_jobs, threads_per_job, usable_cpus
from gradclip.app.errors import UserError
from gradclip.app.tasks import task_class
from gradclip.app.training.rundir import (
    claim_output_folder,
    json_safe,
    timestamped_dir,
    write_text,
)

if TYPE_CHECKING:  # imported where the command runs: the parser is built without torch
    from gradclip.app.experiments import compare as comparison
    from gradclip.app.training.runs import NewRun

DEFAULT_CLIPS = "none,norm:1.0,value:0.5,agc:0.01,autoclip:0.1,zclip"
DEFAULT_STEPS = 1000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="train the same task under several clipping specs and seeds, report",
        formatter_class=options.HelpFormatter, description=__doc__.split("\n")[0] + (
            "\n\nexample:\n  gradclip compare --task adding --seq-len 10 --model rnn --lr 0.15 "
            f"--clips {DEFAULT_CLIPS} --seeds 3 --out runs/compare"))
    options.add_task_options(parser)
    options.add_model_options(parser)
    options.add_optimization_options(parser, steps_help="optimizer steps per run",
                                     clip_help="refused here: compare takes --clips")
    group = parser.add_argument_group("comparison")
    # default None, not the string: argparse would check the default specs (importing torch)
    group.add_argument("--clips", type=options.clip_list, default=None,
                       help=f"comma-separated clipping specs to compare (default: {DEFAULT_CLIPS})")
    group.add_argument("--seeds", type=options.bounded("seeds"), default=3,
                       help="seeds per setting: --seed, --seed + 1, ...")
    options.add_seed_option(group, "first seed")
    group.add_argument("--seq-lens", type=options.comma_list(options.bounded("seq_len"), "lengths"),
                       default=None, help="comma-separated sequence lengths (default: --seq-len)")
    group.add_argument("--lrs", type=options.comma_list(options.learning_rate, "learning rates"),
                       default=None, help="comma-separated learning rates (default: --lr)")
    group.add_argument("--models", type=options.comma_list(options.model_name, "models"), default=None,
                       help="comma-separated models, e.g. rnn,lstm (default: --model)")
    group.add_argument("--jobs", type=options.bounded("jobs"), default=min(2, usable_cpus()),
                       help="runs trained in parallel processes (at most the CPUs; each gets "
                            "--threads, cut so that jobs x threads <= CPUs)")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/compare-<task>-<time>)")
    options.add_device_options(group, device="cpu")
    group.add_argument("--log-every", type=options.bounded("log_every"), default=50,
                       help="per-layer norms and monitor report every N steps (0: never)")
    group.add_argument("--eval-every", type=options.bounded("eval_every"), default=0,
                       help="score the validation set every N steps (0: only at the end)")
    # --clip (one spec, a train flag) would be silently replaced by --clips: refuse it
    parser.set_defaults(run=run, check=refuse_single_clip, steps=DEFAULT_STEPS, clip=None)


def refuse_single_clip(args: argparse.Namespace) -> None:
    """``--clip`` is a train flag; here it would be silently replaced by ``--clips``."""
    if args.clip is not None:
        raise UserError(f"compare takes --clips SPEC,SPEC,... (the specs to compare), not "
                        f"--clip; did you mean --clips {args.clip}?")


def complete(args: argparse.Namespace) -> None:
    """Fill the grid lists from the single-valued options, and the output folder."""
    if args.task == "text" and args.data is None:
        raise UserError("--task text needs --data CSV (comment_text plus label columns)")
    given_epochs = args.epochs
    options.fill_task_defaults(args)
    if given_epochs is not None:  # --epochs replaces the default --steps (text task)
        args.steps = None
    args.clips = args.clips or options.clip_list(DEFAULT_CLIPS)
    args.models = args.models or [args.model]
    args.lrs = args.lrs or [args.lr]
    args.seq_lens = args.seq_lens or [args.seq_len]
    args.jobs = parallel_jobs(args.jobs)  # jobs x threads <= cores: no run waits for a core
    args.threads = threads_per_job(args.threads, args.jobs)
    args.out = args.out or timestamped_dir(f"compare-{args.task}")
    claim_output_folder(args.out)


def varying(args: argparse.Namespace) -> list[str]:
    """The grid dimensions with more than one value (they label the rows), clip always."""
    dims = [("model", args.models), ("seq_len", args.seq_lens), ("lr", args.lrs)]
    return [name for name, values in dims if len(values) > 1] + ["clip"]


def run(args: argparse.Namespace) -> int:
    from gradclip.app.experiments import compare as comparison
    from gradclip.app.experiments.tables import aligned
    from gradclip.app.experiments.workers import worker_count

    complete(args)
    settings = comparison.grid(args.models, args.seq_lens, args.lrs, args.clips)
    seeds = list(range(args.seed, args.seed + args.seeds))
    metric = task_class(args.task).metric_name
    runs = len(settings) * len(seeds)
    print(f"{len(settings)} settings x {len(seeds)} seeds = {runs} runs of {run_length(args)}, "
          f"{worker_count(args.jobs, runs)} at a time with {args.threads} thread(s) each; "
          f"output in {args.out}", flush=True)
    started = time.perf_counter()
    points = [(setting, point_run(args, setting, seed)) for setting in settings
              for seed in seeds]
    grouped = comparison.run_grid(points, settings, args.jobs)
    rows = [comparison.row(s, results, metric) for s, results in grouped.items()]
    labels = varying(args)
    table = comparison.markdown_table(rows, metric, labels)
    elapsed = time.perf_counter() - started
    figures = write_figures(args, grouped, labels)
    write_report(args, table, figures, elapsed, metric)
    write_text(args.out / "results.json", json.dumps(json_safe(
        [{**r, "setting": r["setting"].__dict__} for r in rows]), indent=2) + "\n")
    print(f"\n{aligned(table)}\n\nwrote {args.out / 'report.md'} and {len(figures)} figures "
          f"in {elapsed:.0f} s")
    return 0


def point_run(args: argparse.Namespace, setting: comparison.Setting, seed: int) -> NewRun:
    """The ``gradclip train`` run of one grid point, in ``--out/runs/<setting>-seed<k>``."""
    one = copy.copy(args)
    one.model, one.seq_len, one.lr, one.clip, one.seed = (
        setting.model, setting.seq_len, setting.lr, setting.clip, seed)
    one.out = args.out / "runs" / setting.folder(seed)
    return options.new_run(one, checkpoint_every=0)


def write_figures(args: argparse.Namespace, grouped: dict, labels: list[str]) -> list[Path]:
    from gradclip.app.experiments.plots import plot_compare

    return plot_compare(args.out, grouped, labels)


def run_length(args: argparse.Namespace) -> str:
    """``2000 steps``, or ``6 epochs`` for a task trained by epochs (text)."""
    return f"{args.steps} steps" if args.steps is not None else f"{args.epochs:g} epochs"


def grid_description(args: argparse.Namespace) -> str:
    """The report's first sentence: the task, the grid and the fixed settings, each only
    where it applies (no sequence length for the text task, whose comments set it)."""
    parts = [f"Task {args.task}", f"models {', '.join(args.models)}"]
    if any(length is not None for length in args.seq_lens):
        parts.append(f"sequence lengths {', '.join(str(t) for t in args.seq_lens)}")
    parts += [f"learning rates {', '.join(f'{lr:g}' for lr in args.lrs)}",
              f"optimizer {args.optimizer}" + (f" (momentum {args.momentum})"
                                               if args.optimizer == "sgd" else ""),
              f"batch {args.batch_size}", f"hidden {args.hidden_size}", run_length(args),
              f"seeds {args.seed}..{args.seed + args.seeds - 1}"]
    return ", ".join(parts)


def write_report(args: argparse.Namespace, table: str, figures: list[Path], elapsed: float,
                 metric: str) -> None:
    from gradclip.app.experiments import compare as comparison

    criterion = task_class(args.task).success_criterion
    lines = [
        f"# gradclip compare: {args.task}",
        "",
        f"{grid_description(args)}. Wall time {elapsed:.0f} s with {args.jobs} parallel runs.",
        "",
        f"Success: {criterion}. Diverged: the loss became NaN/Inf, or the final validation "
        f"loss exceeds {comparison.DIVERGENCE_FACTOR:g}x the first training loss. Clip rate: "
        f"share of steps the clipper changed the gradient. Run verdict: the most common "
        f"run-level diagnosis over the seeds (gradclip.monitor.diagnosis: the loss, norm, "
        f"clip and skip histories, and the time profiles measured every {args.log_every} "
        f"steps; never healthy when the loss diverged or stalled).",
        "",
        table,
        "",
    ]
    lines += [f"![{path.stem}]({path.name})" for path in figures]
    write_text(args.out / "report.md", "\n".join(lines) + "\n")
