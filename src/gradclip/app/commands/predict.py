"""``gradclip predict``: score unlabelled comments with a trained text model, one probability
per label, written as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="score unlabelled comments with a trained text model",
        formatter_class=HelpFormatter,
        description=__doc__.split("\n")[0].replace("``", "") + " per label, written as CSV."
        "\n\nexample:\n  gradclip predict runs/text-gru-norm_1.0-20260101-120000 "
        "--data new.csv --out predictions.csv")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="run directory written by gradclip train --task text")
    parser.add_argument("--data", type=Path, required=True,
                        help="CSV with the run's text column (labels are not needed)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"),
                        help="CSV to write: id (or row, counted from 1) and one probability "
                             "column per label, in the input's order")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import csv

    import torch

    from gradclip.app.tasks.text.data import read_unlabelled
    from gradclip.app.training.scoring import open_scoring

    if not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    if args.out.exists() and args.out.is_dir():
        raise UserError(f"--out {args.out} is a directory; give a file name")
    _, task, model, device = open_scoring(args.run_dir, args.device)
    if task.name != "text":
        raise UserError(f"{args.run_dir} is a run of --task {task.name}; predict is for "
                        "--task text runs")
    settings = task.settings
    ids, texts = read_unlabelled(args.data, settings.get("text_column") or "comment_text",
                                 settings.get("delimiter") or ",")
    if not texts:
        raise UserError(f"{args.data} has no data rows")
    with torch.no_grad():
        probabilities = torch.sigmoid(task.predict_logits(model, task.encode(texts), device))
    try:
        with open(args.out, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["id" if ids is not None else "row", *task.label_names])
            for index, row in enumerate(probabilities.tolist()):
                key = ids[index] if ids is not None else index + 1
                writer.writerow([key, *(f"{value:.6f}" for value in row)])
    except OSError as error:
        raise UserError(f"cannot write --out {args.out}: {error.strerror}") from None
    print(f"wrote {len(texts)} rows x {len(task.label_names)} labels to {args.out}")
    return 0
