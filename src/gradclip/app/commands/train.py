"""``gradclip train``: train a recurrent model on a task, or ``--resume`` a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gradclip.app.choices import PARALLEL_MODES
from gradclip.app.commands import options
from gradclip.app.errors import UserError

if TYPE_CHECKING:  # imported where the command runs: the parser is built without torch
    from gradclip.app.training.parallel import Parallel
    from gradclip.app.training.runs import Run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on a task (or resume a run)",
        formatter_class=options.HelpFormatter,
        description=__doc__.split("\n")[0].replace("``", "") + (
            "\n\nexamples:\n"
            "  gradclip train --task adding --seq-len 20 --model rnn --clip norm:1.0\n"
            "  gradclip train --task text --data toxic.csv\n"
            "  gradclip train --resume runs/adding-rnn-norm_1.0-20260101-120000"))
    options.add_task_options(parser)
    options.add_model_options(parser)
    options.add_optimization_options(parser)
    add_run_options(parser)
    parser.set_defaults(run=run)
    parser.set_defaults(flag_defaults=vars(parser.parse_args([])))


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    options.add_seed_option(group, "seed of weights, data and split")
    options.add_device_options(group)
    group.add_argument("--out", type=Path, default=None,
                       help="run directory (default: a new folder runs/<task>-<model>-<clip>-"
                            "<time>)")
    group.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue the run in DIR from its checkpoint with its saved "
                            "configuration (only --progress may be given with it; a run "
                            "stopped before its first checkpoint starts over)")
    group.add_argument("--log-every", type=options.bounded("log_every"), default=50,
                       help="record per-layer gradient norms every N steps (0: never)")
    group.add_argument("--eval-every", type=options.bounded("eval_every"), default=0,
                       help="score the validation set every N steps (0: only at the end)")
    group.add_argument("--checkpoint-every", type=options.bounded("checkpoint_every"), default=200,
                       help="write checkpoint.pt every N steps (0: only at the end)")
    group.add_argument("--keep-best", action="store_true",
                       help="also keep the weights with the best validation score (the task's "
                            "metric, scored at --eval-every and at the end) in best.pt; "
                            "gradclip eval and predict then use them")
    options.add_progress_option(group)
    group.add_argument("--tensorboard", action="store_true",
                       help="also log scalars and gradient/weight histograms for TensorBoard "
                            "into RUN_DIR/tensorboard (needs: pip install "
                            "'gradclip[tensorboard]')")
    group.add_argument("--distributed", choices=PARALLEL_MODES, default="none",
                       help="under torchrun: DDP or FSDP2 over the launched processes, each "
                            "taking its slice of every --batch-size batch (gloo on CPU, NCCL "
                            "on CUDA); see docs/distributed.md")


RESUME_FLAGS = ("resume", "progress", "run", "flag_defaults")


def refuse_flags_with_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues the saved configuration exactly: no other setting may change."""
    given = sorted(name for name, default in args.flag_defaults.items()
                   if name not in RESUME_FLAGS and getattr(args, name) != default)
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UserError(f"--resume continues a run with its saved configuration; {flags} "
                        "cannot be changed (start a new run with --out instead)")


def run(args: argparse.Namespace) -> int:
    """Train a new run or resume one, on one process or on every rank of a torchrun launch."""
    from gradclip.app.experiments.summary import format_summary
    from gradclip.app.training.parallel import Parallel
    from gradclip.app.training.runs import create_run, open_run, read_config

    if args.resume is not None:
        refuse_flags_with_resume(args)
    saved = read_config(args.resume) if args.resume is not None else None
    mode = args.distributed if saved is None else (
        saved.distributed.mode if saved.distributed else "none")
    parallel = Parallel.for_run(mode, saved.train.device if saved else args.device)
    if args.tensorboard and mode == "fsdp":
        raise UserError("--tensorboard is not supported with --distributed fsdp (its "
                        "histograms need whole tensors); use it with ddp")
    request = options.new_run(args) if saved is None else None
    try:
        with parallel.process_group():
            opened = create_run(request, parallel) if request is not None else open_run(
                args.resume, parallel)
            with opened as current:
                summary = train(current, parallel, args)
    except UserError:
        if not parallel.is_writer:
            raise SystemExit(2) from None  # rank 0 says it, once
        raise
    if parallel.is_writer:
        print(format_summary(summary, current.config))
    return 0


def train(current: Run, parallel: Parallel, args: argparse.Namespace) -> dict:
    """The open run trained to its end; only the writer prints and logs."""
    from gradclip.app.training.loggers import run_loggers
    from gradclip.app.training.trainer import Trainer

    writer = parallel.is_writer
    # a new run refused here (no tensorboard, a model that cannot be built, a closed stdout)
    # leaves no folder
    try:
        if writer:
            mode = parallel.mode
            launched = "" if mode == "none" else f" ({mode}, {parallel.world_size} processes)"
            print(f"run directory: {current.run_dir}{launched}", flush=True)
        loggers = run_loggers(current.run_dir, progress=options.PROGRESS[args.progress],
                              tensorboard=args.tensorboard,
                              log_every=current.config.train.log_every) if writer else []
        trainer = Trainer(current.run_dir, current.config, current.task, parallel)
    except BaseException:
        current.discard()
        raise
    return trainer.train(current.checkpoint, loggers=loggers)
