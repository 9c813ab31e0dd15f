"""``gradclip plot RUN_DIR``: write a run's figures (loss, gradient norm, per-layer heat map)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import UserError
from gradclip.app.training.rundir import METRICS, refuse_linked_entries


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="write PNG plots of a run directory's metrics.jsonl into it",
        formatter_class=HelpFormatter, description=__doc__.split("\n")[0] + (
            "\n\nwrites loss.png, grad_norm.png (with the clipping threshold) and "
            "layer_norms.png (per-layer norms logged every --log-every steps)"))
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a run directory written by gradclip train")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradclip.app.experiments.plots import plot_run

    metrics = args.run_dir / METRICS
    if not args.run_dir.is_dir():
        raise UserError(f"run directory {args.run_dir} does not exist")
    if not metrics.exists():  # a folder or a device in its place: read_metrics says so
        raise UserError(f"{args.run_dir} is not a gradclip run directory: {METRICS} is missing")
    refuse_linked_entries(args.run_dir)  # a figure written through a link would land outside
    try:
        paths = plot_run(args.run_dir)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"corrupt {metrics}: expected one JSON object per line with "
                        "step, loss and grad_norm") from None
    if not paths:
        raise UserError(f"{metrics} holds no steps yet")
    for path in paths:
        print(f"wrote {path}")
    return 0
