"""Which task reads which task flag: a flag the chosen task would ignore is a user error.

``gradclip train --task adding --data comments.csv`` used to train the adding problem and
silently drop ``--data``. The command line checks the flags against this table before it
imports torch, so the mistake is one line at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from gradclip.app.choices import TRANSFORMER
from gradclip.app.errors import UserError

# flag -> the tasks that read it (flags every task reads are not listed)
TASK_FLAGS: dict[str, tuple[str, ...]] = {
    "--seq-len": ("adding", "temporal-order", "lm"),
    "--data": ("text", "lm"),
    "--labels": ("text",),
    "--text-column": ("text",),
    "--delimiter": ("text",),
    "--vocab-size": ("text",),
    "--max-len": ("text",),
    "--val-fraction": ("text", "lm"),
    "--text-file": ("lm",),
    "--embed-dim": ("text", "lm"),
}

# model-only flags: flag -> whether the transformer reads it (else only the recurrent models)
MODEL_FLAGS: dict[str, bool] = {"--heads": True, "--embed-dim": False, "--bidirectional": False}


def refuse_ignored_task_flags(args: argparse.Namespace, defaults: Mapping[str, object]) -> None:
    """Raise ``UserError`` naming the first flag ``args.task`` ignores that was given.

    Args:
        args: the parsed arguments of a command with ``--task``.
        defaults: each option's default (a flag is given when its value differs).

    Raises:
        UserError: a task flag was given that the chosen task does not read.
    """
    for flag, tasks in TASK_FLAGS.items():
        dest = flag[2:].replace("-", "_")
        if args.task in tasks or getattr(args, dest, None) == defaults.get(dest):
            continue
        raise UserError(f"--task {args.task} ignores {flag} (only {', '.join(tasks)} use it); "
                        "remove it")


def refuse_model_mismatch(args: argparse.Namespace, defaults: Mapping[str, object]) -> None:
    """Raise ``UserError`` for ``--model transformer`` off ``--task lm``, for ``--models``
    mixing it with recurrent models (each kind has its own defaults), or for a flag the
    chosen model ignores (``--heads`` with a recurrent cell, ``--embed-dim`` with the
    transformer).

    Args:
        args: the parsed arguments of a command with ``--task`` and ``--model``.
        defaults: each option's default (a flag is given when its value differs).

    Raises:
        UserError: naming the flag or the task.
    """
    models = getattr(args, "models", None) or [getattr(args, "model", None)]
    transformer = TRANSFORMER in models
    if transformer and len(set(models)) > 1:
        raise UserError(f"--models cannot mix {TRANSFORMER} with recurrent models: their "
                        "defaults (optimizer, rate, schedule, context) differ; compare each "
                        "kind in a run of its own")
    if transformer and args.task != "lm":
        raise UserError(f"--model {TRANSFORMER} is a character language model: use it with "
                        f"--task lm, not --task {args.task}")
    for flag, for_transformer in MODEL_FLAGS.items():
        dest = flag[2:].replace("-", "_")
        if getattr(args, dest, None) == defaults.get(dest) or (
                transformer if for_transformer else not transformer):
            continue
        reader = f"--model {TRANSFORMER}" if for_transformer else "the recurrent models"
        raise UserError(f"{flag} is read only by {reader}; remove it")
