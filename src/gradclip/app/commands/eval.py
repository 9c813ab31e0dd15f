"""``gradclip eval``: score a trained text model on another CSV of the same format."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from gradclip.app.commands.options import HelpFormatter
from gradclip.app.config import RunConfig
from gradclip.app.errors import UserError
from gradclip.app.models import build_model
from gradclip.app.tasks.base import Task
from gradclip.app.tasks.text.metrics import format_label_table
from gradclip.app.training.rundir import json_safe
from gradclip.app.training.runs import open_for_scoring
from gradclip.app.training.setup import resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="score a trained text model on another CSV", formatter_class=HelpFormatter,
        description=__doc__.split("\n")[0].replace("``", "") + "\n\nexample:\n  gradclip eval runs/text-lstm-"
        "norm_1.0-20260101-120000 --data unseen.csv --json")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="run directory written by gradclip train --task text")
    parser.add_argument("--data", type=Path, required=True,
                        help="CSV with comment_text and the run's label columns")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (mean_roc_auc, per_label, accuracy, loss)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(run=run)


def load_model(run_dir: Path, config: RunConfig, task: Task, state: dict,
               device: torch.device) -> torch.nn.Module:
    """The run's model with the weights of its checkpoint, in eval mode."""
    model = build_model(task, **dataclasses.asdict(config.model))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError(f"the checkpoint in {run_dir} does not match its config.json") from None
    return model.to(device).eval()


def run(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    device = resolve_device(args.device)
    config, task, state = open_for_scoring(args.run_dir)
    model = load_model(args.run_dir, config, task, state, device)
    with torch.no_grad():
        scores = task.evaluate_file(model, args.data, device)
    if args.json:
        # strict JSON: a diverged model's NaN loss is written as the string "nan"
        print(json.dumps(json_safe(scores), allow_nan=False))
    else:
        print(f"{args.data} scored by {args.run_dir} ({scores.get('rows', '?')} rows):")
        print(format_label_table(scores))
    return 0
