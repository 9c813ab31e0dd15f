"""What the commands share: argparse option groups, the help formatter, ``type=`` checks.

Each command module is a leaf that imports from here (never from another command). A bad
value given to a flag becomes one short argparse error line, with exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

# The parser is built before torch is imported (an instant --help): names only at the top;
# what needs torch is imported where a command runs.
from gradclip.app.bounds import BOUNDS
from gradclip.app.choices import (
    AMP_MODES,
    MODEL_NAMES,
    NONFINITE_POLICIES,
    OPTIMIZERS,
    SCHEDULES,
)
from gradclip.app.config import (
    FLAG_DEFAULTS,
    MODEL_RECOMMENDED,
    RECOMMENDED,
    ModelConfig,
    TaskOptions,
    TrainConfig,
    recommended_settings,
)
from gradclip.app.errors import UserError
from gradclip.app.tasks import TASKS

if TYPE_CHECKING:
    from gradclip.app.training.runs import NewRun

PROGRESS = {"auto": None, "always": True, "never": False}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default and keeps the hand-made line breaks of descriptions."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # defaults of None/False are explained in the help text itself, or mean "off"
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


Number = TypeVar("Number", int, float)


def _number(text: str, kind: Callable[[str], Number]) -> Number:
    try:
        return kind(text)
    except ValueError:  # not a number, or more digits than Python converts
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {_quoted(text)}") from None


def _quoted(text: str) -> str:
    """The text of a flag as an error quotes it (a long one cut short)."""
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text)} characters)"


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def bounded(name: str):
    """argparse type: a number within ``BOUNDS[name]``, the range ``config.json`` is held to.

    The same ``Bound`` checks the value read back from a run folder (``RunConfig.from_dict``),
    so the flag and the stored value have one definition.
    """
    bound = BOUNDS[name]

    def parse(text: str) -> float | int:
        value = _number(text, bound.kind)
        if not bound.admits(value):
            shown = text if len(text) <= 40 else _quoted(text)
            raise argparse.ArgumentTypeError(f"must be {bound.describe()}, got {shown}")
        return value

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


learning_rate = bounded("lr")
seed = bounded("seed")
threads = bounded("threads")
vocab_size = bounded("vocab_size")


def label_list(text: str) -> list[str]:
    """Comma-separated label columns, e.g. ``toxic,insult``."""
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        raise argparse.ArgumentTypeError("expected comma-separated label names, e.g. toxic,insult")
    return labels


def clip_spec(text: str) -> str:
    """A clipping spec, checked (``norm:1.0``)."""
    from gradclip.app.training.setup import clipper_from_spec

    try:
        clipper_from_spec(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def percentile(text: str) -> float:
    """A percentile in (0, 100)."""
    value = positive_float(text)
    if not value < 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def comma_list(kind, name: str):
    """argparse type: a comma-separated list of ``kind`` values, each checked."""
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {name}")
        return [kind(item) for item in items]
    return parse


def model_name(text: str) -> str:
    if text not in MODEL_NAMES:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from "
                                         f"{', '.join(MODEL_NAMES)}")
    return text




def clip_list(text: str) -> list[str]:
    """Specs separated by commas; a comma inside ``name:key=value,key=value`` stays in it (in
    a chain too: ``spikeskip:window=32,sigma=3+norm:1.0``)."""
    specs: list[str] = []
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        head = part.split("+")[0]  # key=value, or key=value+next member: the spec goes on
        if specs and "=" in head and ":" not in head:
            specs[-1] += "," + part
        else:
            specs.append(part)
    if not specs:
        raise argparse.ArgumentTypeError("expected comma-separated clip specs")
    for spec in specs:
        clip_spec(spec)
    return specs


# ---------------------------------------------------------------------- option groups
def add_task_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("task and data")
    group.add_argument("--task", choices=tuple(TASKS), default="adding",
                       help="adding / temporal-order: synthetic long-range tasks generated from "
                            "the seed; text: multi-label classification of a CSV (needs --data); "
                            "lm: next-character language modelling on real text")
    group.add_argument("--data", type=Path, help="CSV in the Jigsaw toxic-comment format "
                       "(comment_text + label columns): the data of --task text; --task lm "
                       "models its comments unless --text-file is given")
    group.add_argument("--seq-len", type=bounded("seq_len"), default=None, help=task_default(
        "seq_len", "sequence length T of the synthetic tasks, window length of lm (default: "
        "10 for adding, 20 for temporal-order, 50 for lm)"))
    group.add_argument("--labels", type=label_list, default=None,
                       help="comma-separated label columns to learn (text; default: every "
                            "known label column present in the CSV)")
    group.add_argument("--text-column", default=None, metavar="NAME",
                       help="the CSV column holding the comments (text; default: comment_text)")
    group.add_argument("--delimiter", default=None, metavar="CHAR",
                       help="the CSV field separator, e.g. ';' or tab as $'\\t' (text; "
                            "default: ,)")
    group.add_argument("--vocab-size", type=vocab_size, default=20000,
                       help="tokenizer vocabulary size, learnt from the training split (text)")
    group.add_argument("--max-len", type=bounded("max_len"), default=256,
                       help="tokens kept per comment (text)")
    group.add_argument("--val-fraction", type=bounded("val_fraction"), default=0.1,
                       help="fraction of the rows held out for validation, split by --seed "
                            "(text; lm: the end of the text)")
    group.add_argument("--text-file", type=Path, default=None,
                       help="a plain UTF-8 text file to model (lm; default: --data's comments, "
                            "else a few KB of Alice in Wonderland built in)")


def task_default(name: str, help: str) -> str:
    """``help`` followed by the flag's default and each task's own (``RECOMMENDED``), then
    each (task, model) pair's (``MODEL_RECOMMENDED``)."""
    def value(item): return {True: "on", False: "off"}.get(item, item) \
        if isinstance(item, bool) else f"{item:g}" if isinstance(item, float) else item
    default = FLAG_DEFAULTS[name]
    shown = [] if default is None else [f"default: {value(default)}"]
    shown += [f"--task {task}: {value(settings[name])}" for task, settings in RECOMMENDED.items()
              if name in settings and settings[name] != default]
    shown += [f"--task {task} --model {model}: {value(settings[name])}"
              for (task, model), settings in MODEL_RECOMMENDED.items()
              if name in settings and settings[name] != default]
    return f"{help} ({'; '.join(shown)})" if shown else help


def resolve_task_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The value of each task-dependent flag: the one given, else the setting the task
    recommends with the chosen model (``recommended_settings``), else the flag's default
    (``FLAG_DEFAULTS``)."""
    recommended = recommended_settings(getattr(args, "task", ""), getattr(args, "model", None))
    return {name: getattr(args, name) if getattr(args, name, None) is not None
            else recommended.get(name, default) for name, default in FLAG_DEFAULTS.items()}


def fill_task_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with each task-dependent flag the user left out set to its resolved value."""
    for name, value in resolve_task_defaults(args).items():
        if hasattr(args, name):
            setattr(args, name, value)
    return args


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=MODEL_NAMES, default=None, help=task_default(
        "model", "recurrent cell: vanilla RNN (tanh), RNN with ReLU, LSTM or GRU; or "
                 "transformer, a small causal decoder (GPT-2 style) for --task lm"))
    group.add_argument("--hidden-size", type=bounded("hidden_size"), default=None,
                       help=task_default("hidden_size", "hidden units per direction and layer "
                                         "(transformer: the model width)"))
    group.add_argument("--layers", type=bounded("layers"), default=None,
                       help=task_default("layers", "stacked recurrent layers (transformer: "
                                         "blocks)"))
    group.add_argument("--heads", type=bounded("heads"), default=None,
                       help=task_default("heads", "attention heads per block, dividing "
                                         "--hidden-size (transformer only)"))
    group.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                       help=task_default("bidirectional", "add a reverse-direction pass (each "
                                         "row reversed within its length)"))
    group.add_argument("--dropout", type=bounded("dropout"), default=None, help=task_default(
        "dropout", "dropout on embeddings, between layers and before the head (transformer: "
                   "on embeddings, attention weights and each block's outputs)"))
    group.add_argument("--embed-dim", type=bounded("embed_dim"), default=None,
                       help=task_default("embed_dim", "token embedding width (text)"))


def add_optimization_options(
    parser: argparse.ArgumentParser, *,
    clip_help: str = ("clipping strategy spec: none, norm:1.0, value:0.5, agc:0.01, "
                      "autoclip:0.1, zclip, zclip:alpha=0.97,z_thresh=2.5, adagc, "
                      "spikeskip; join specs with + to apply them in turn: "
                      "spikeskip+norm:1.0, agc:0.01+norm:1.0"),
    steps_help: str = ("optimizer steps (default: 2000, the transformer included; --task "
                       "text: --epochs instead)"),
) -> None:
    group = parser.add_argument_group("optimization and clipping")
    group.add_argument("--clip", default=None, help=task_default("clip", clip_help))
    group.add_argument("--nonfinite", choices=NONFINITE_POLICIES, default="propagate",
                       help="on a NaN/Inf loss or gradient: propagate (step anyway, stop the run "
                            "as diverged), skip (skip the step and count it), error (stop with "
                            "the name of the first parameter holding NaN/Inf)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help=task_default("optimizer", "optimizer"))
    group.add_argument("--lr", type=learning_rate, default=None,
                       help=task_default("lr", "learning rate"))
    group.add_argument("--momentum", type=bounded("momentum"), default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=bounded("weight_decay"), default=None,
                       help=task_default("weight_decay", "weight decay (decoupled for adamw)"))
    group.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help=task_default("schedule", "learning-rate schedule over the run"))
    group.add_argument("--warmup-steps", type=bounded("warmup_steps"), default=None, help=task_default(
        "warmup_steps", "linear learning-rate warm-up over the first N steps, before the "
                        "schedule"))
    group.add_argument("--min-lr-ratio", type=bounded("min_lr_ratio"), default=None, help=task_default(
        "min_lr_ratio", "where cosine and warmdown decay to, as a fraction of --lr"))
    group.add_argument("--steps", type=bounded("total_steps"), default=None, help=steps_help)
    group.add_argument("--epochs", type=bounded("epochs"), default=None,
                       help=task_default("epochs", "passes over the training split, text "
                                         "only"))
    group.add_argument("--batch-size", type=bounded("batch_size"), default=None,
                       help=task_default("batch_size", "sequences per micro-batch"))
    group.add_argument("--accumulate", type=bounded("accumulate"), default=1,
                       help="micro-batches per optimizer step (clipping happens once per step)")
    group.add_argument("--amp", choices=AMP_MODES, default="none",
                       help="mixed precision: fp16 (CUDA, with GradScaler) or bf16 (CPU or CUDA)")


def add_device_options(group: argparse._ArgumentGroup, device: str = "auto") -> None:
    group.add_argument("--device", default=device, help="auto, cpu, cuda or cuda:N")
    group.add_argument("--threads", type=threads, default=None,
                       help=task_default("threads", "CPU threads for torch"))


def add_seed_option(group: argparse._ArgumentGroup, help: str) -> None:
    group.add_argument("--seed", type=seed, default=0, help=help)


def add_progress_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--progress", choices=tuple(PROGRESS), default="auto",
                       help="progress: auto shows a bar when stdout is a terminal and "
                            "a plain line every 30 s otherwise; always: the bar; never: "
                            "nothing")


# ---------------------------------------------------------------------- the request
def new_run(args: argparse.Namespace, **train: object) -> NewRun:
    """The run the flags ask for (``train`` overrides training settings, e.g. per grid point)."""
    from gradclip.app.training.runs import NewRun

    flags = resolve_task_defaults(args)
    options = TaskOptions(name=args.task, seed=args.seed, batch_size=flags["batch_size"],
                          seq_len=flags["seq_len"], data=args.data, vocab_size=args.vocab_size,
                          max_len=args.max_len, labels=args.labels,
                          val_fraction=args.val_fraction, text_file=args.text_file,
                          text_column=getattr(args, "text_column", None),
                          delimiter=getattr(args, "delimiter", None), model=flags["model"])
    model = ModelConfig(cell=flags["model"], hidden_size=flags["hidden_size"],
                        layers=flags["layers"], bidirectional=flags["bidirectional"],
                        dropout=flags["dropout"], embed_dim=flags["embed_dim"],
                        heads=flags["heads"] or 0)
    settings = dict(
        clip=flags["clip"], nonfinite=args.nonfinite, optimizer=flags["optimizer"],
        lr=flags["lr"], momentum=args.momentum, weight_decay=flags["weight_decay"],
        schedule=flags["schedule"], warmup_steps=flags["warmup_steps"],
        min_lr_ratio=flags["min_lr_ratio"], total_steps=args.steps,
        # --steps replaces the task's epochs (both given by the user is an error, later)
        epochs=flags["epochs"] if args.steps is None else args.epochs,
        batch_size=flags["batch_size"],
        accumulate=args.accumulate, amp=args.amp, seed=args.seed, device=args.device,
        threads=flags["threads"], log_every=getattr(args, "log_every", 50),
        eval_every=getattr(args, "eval_every", 0),
        checkpoint_every=getattr(args, "checkpoint_every", 200),
        keep_best=getattr(args, "keep_best", False))
    settings.update(train)
    return NewRun(options, model, TrainConfig(**settings), getattr(args, "out", None))
