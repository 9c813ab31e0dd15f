"""``gradclip train``: train a recurrent model on a task, or ``--resume`` a run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import gradclip
from gradclip.app import checkpoint as checkpoints
from gradclip.app.cli import HelpFormatter
from gradclip.app.clipping import clipper_from_spec
from gradclip.app.commands import argtypes
from gradclip.app.errors import UserError
from gradclip.app.loop import NONFINITE_POLICIES, Trainer
from gradclip.app.models import CELLS
from gradclip.app.optimization import AMP_MODES, OPTIMIZERS, SCHEDULES, check_amp, resolve_device
from gradclip.app.report import format_summary
from gradclip.app.run_dir import CONFIG, default_run_dir, read_config, write_json
from gradclip.app.tasks import TASKS, load_task, make_task

DEFAULT_STEPS = 2000
DEFAULT_EPOCHS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on a task (or resume a run)",
        formatter_class=HelpFormatter, description=__doc__.split("\n")[0].replace("``", "") + (
            "\n\nexamples:\n"
            "  gradclip train --task adding --seq-len 20 --model rnn --clip norm:1.0\n"
            "  gradclip train --task text --data toxic.csv --model lstm --epochs 3\n"
            "  gradclip train --resume runs/adding-rnn-norm_1.0-20260101-120000"))
    add_task_options(parser)
    add_model_options(parser)
    add_optimization_options(parser)
    add_run_options(parser)
    parser.set_defaults(run=run)


def add_task_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("task and data")
    group.add_argument("--task", choices=tuple(TASKS), default="adding",
                       help="adding / temporal-order: synthetic long-range tasks generated from "
                            "the seed; text: multi-label classification of a CSV (needs --data)")
    group.add_argument("--data", type=Path, help="CSV in the Jigsaw toxic-comment format "
                       "(comment_text + label columns), for --task text")
    group.add_argument("--seq-len", type=argtypes.positive_int, default=None,
                       help="sequence length T of the synthetic tasks (default: 10 for adding, "
                            "20 for temporal-order)")
    group.add_argument("--labels", type=argtypes.label_list, default=None,
                       help="comma-separated label columns to learn (text; default: every "
                            "known label column present in the CSV)")
    group.add_argument("--vocab-size", type=argtypes.positive_int, default=20000,
                       help="tokenizer vocabulary size, learnt from the training split (text)")
    group.add_argument("--max-len", type=argtypes.positive_int, default=256,
                       help="tokens kept per comment (text)")
    group.add_argument("--val-fraction", type=argtypes.fraction, default=0.1,
                       help="fraction of the rows held out for validation, split by --seed (text)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=tuple(CELLS), default="rnn",
                       help="recurrent cell: vanilla RNN (tanh), RNN with ReLU, LSTM or GRU")
    group.add_argument("--hidden-size", type=argtypes.positive_int, default=64,
                       help="hidden units per direction and layer")
    group.add_argument("--layers", type=argtypes.positive_int, default=1,
                       help="stacked recurrent layers")
    group.add_argument("--bidirectional", action="store_true",
                       help="add a reverse-direction pass (each row reversed within its length)")
    group.add_argument("--dropout", type=argtypes.fraction, default=0.0,
                       help="dropout on embeddings, between layers and before the head")
    group.add_argument("--embed-dim", type=argtypes.positive_int, default=128,
                       help="token embedding width (text)")


def add_optimization_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimization and clipping")
    group.add_argument("--clip", default="norm:1.0",
                       help="clipping strategy spec: none, norm:1.0, value:0.5, agc:0.01, "
                            "autoclip:0.1, zclip, zclip:alpha=0.97,z_thresh=2.5, ...")
    group.add_argument("--nonfinite", choices=NONFINITE_POLICIES, default="propagate",
                       help="on a NaN/Inf loss or gradient: propagate (step anyway, stop the run "
                            "as diverged), skip (skip the step and count it), error (stop with "
                            "the name of the first parameter holding NaN/Inf)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer")
    group.add_argument("--lr", type=argtypes.positive_float, default=0.05, help="learning rate")
    group.add_argument("--momentum", type=argtypes.fraction, default=0.9,
                       help="SGD momentum")
    group.add_argument("--weight-decay", type=argtypes.nonnegative_float, default=0.0,
                       help="weight decay (decoupled for adamw)")
    group.add_argument("--schedule", choices=SCHEDULES, default="constant",
                       help="learning-rate schedule over the run")
    group.add_argument("--steps", type=argtypes.positive_int, default=None,
                       help=f"optimizer steps (default: {DEFAULT_STEPS} for synthetic tasks)")
    group.add_argument("--epochs", type=argtypes.positive_float, default=None,
                       help=f"passes over the training split, text only (default: "
                            f"{DEFAULT_EPOCHS})")
    group.add_argument("--batch-size", type=argtypes.positive_int, default=64,
                       help="sequences per micro-batch")
    group.add_argument("--accumulate", type=argtypes.positive_int, default=1,
                       help="micro-batches per optimizer step (clipping happens once per step)")
    group.add_argument("--amp", choices=AMP_MODES, default="none",
                       help="mixed precision: fp16 (CUDA, with GradScaler) or bf16 (CPU or CUDA)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of weights, data and split")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--threads", type=argtypes.positive_int, default=1,
                       help="CPU threads for torch")
    group.add_argument("--out", type=Path, default=None,
                       help="run directory (default: a new folder runs/<task>-<model>-<clip>-"
                            "<time>)")
    group.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue the run in DIR from its checkpoint with its saved "
                            "configuration (other options are ignored)")
    group.add_argument("--log-every", type=argtypes.nonnegative_int, default=50,
                       help="record per-layer gradient norms every N steps (0: never)")
    group.add_argument("--eval-every", type=argtypes.nonnegative_int, default=0,
                       help="score the validation set every N steps (0: only at the end)")
    group.add_argument("--checkpoint-every", type=argtypes.nonnegative_int, default=200,
                       help="write checkpoint.pt every N steps (0: only at the end)")
    group.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar: auto shows it when stdout is a terminal")
    group.add_argument("--tensorboard", action="store_true",
                       help="also log scalars and gradient/weight histograms for TensorBoard "
                            "into RUN_DIR/tensorboard (needs: pip install "
                            "'gradclip[tensorboard]')")
    group.add_argument("--distributed", choices=("none", "ddp", "fsdp"), default="none",
                       help="under torchrun: DDP or FSDP2 over the launched processes, each "
                            "taking its slice of every --batch-size batch (gloo on CPU, NCCL "
                            "on CUDA); see docs/readme/distributed.md")


def total_steps(args: argparse.Namespace, batches_per_epoch: int | None) -> int:
    """``--steps``, or ``--epochs`` turned into optimizer steps (text)."""
    if args.steps is not None and args.epochs is not None:
        raise UserError("give --steps or --epochs, not both")
    if args.steps is not None:
        return args.steps
    if batches_per_epoch is None:
        if args.epochs is not None:
            raise UserError(f"--epochs needs a task with a finite data set; the {args.task} "
                            "task is generated on the fly: use --steps")
        return DEFAULT_STEPS
    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    return max(1, math.ceil(epochs * batches_per_epoch / args.accumulate))


def new_config(args: argparse.Namespace, task: Any) -> dict[str, Any]:
    """The ``config.json`` of a new run: task settings, model, training settings."""
    return {
        "gradclip_version": gradclip.__version__,
        "task": task.config(),
        "model": {"cell": args.model, "hidden_size": args.hidden_size, "layers": args.layers,
                  "bidirectional": args.bidirectional, "dropout": args.dropout,
                  "embed_dim": args.embed_dim},
        "train": {"clip": args.clip, "nonfinite": args.nonfinite, "optimizer": args.optimizer,
                  "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
                  "schedule": args.schedule, "total_steps": total_steps(args,
                                                                        task.batches_per_epoch),
                  "epochs": args.epochs, "batch_size": args.batch_size,
                  "accumulate": args.accumulate, "amp": args.amp, "seed": args.seed,
                  "device": args.device, "threads": args.threads, "log_every": args.log_every,
                  "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every},
    }


def prepare_new_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Any]:
    """Check the options, build the task, create the run directory and write config.json."""
    clipper_from_spec(args.clip)  # a bad spec fails before any data is read
    check_amp(args.amp, resolve_device(args.device))  # ... and a bad device before any folder
    if args.task == "text" and args.data is None:
        raise UserError("--task text needs --data CSV (comment_text plus label columns)")
    run_dir = args.out or default_run_dir(args.task, args.model, args.clip)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"--out {run_dir} is not an empty folder; choose a new one, or "
                        f"continue the run there with --resume {run_dir}")
    task = make_task(args.task, args)
    config = new_config(args, task)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, config)
    return run_dir, config, task


def run(args: argparse.Namespace) -> int:
    progress = {"auto": None, "always": True, "never": False}[args.progress]
    from gradclip.app import distributed_training

    distributed = distributed_training.launch_for(args)
    if distributed is not None:
        return distributed_training.run(args, *distributed, progress)
    checkpoint = None
    if args.resume is not None:
        run_dir = args.resume
        config = read_config(run_dir)
        checkpoint = checkpoints.load_checkpoint(run_dir)
        task = load_task(config["task"], run_dir)
    else:
        run_dir, config, task = prepare_new_run(args)
    print(f"run directory: {run_dir}")
    trainer = Trainer(run_dir, config, task)
    writer = None
    if getattr(args, "tensorboard", False):
        from gradclip.app.tensorboard import attach_tensorboard

        writer = attach_tensorboard(trainer, run_dir)
    summary = trainer.train(checkpoint, progress=progress)
    if writer is not None:
        writer.close()
    print(format_summary(summary, config))
    return 0
