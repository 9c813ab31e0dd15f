"""``gradclip predict``: score unlabelled comments with a trained text model, one probability
per label: a CSV file, or a table on stdout for comments given on the command line or stdin."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import UserError
from gradclip.app.training.rundir import write_text
from gradclip.app.untrusted import regular_file_problem

STDIN = Path("-")
DEFAULT_OUT = Path("predictions.csv")  # for --data FILE without --out
SHOWN_CHARS = 40  # the longest text shown in a table row
HEADER_LIMIT = 65_536  # the characters of an existing --out's first line read to check it


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="score unlabelled comments with a trained text model",
        formatter_class=HelpFormatter,
        description="Score unlabelled comments with a trained text model, one probability per "
        "label: a CSV file, or a table on stdout for comments given on the command line or stdin."
        "\n\nexamples:\n  gradclip predict runs/text-gru-norm_1.0-20260101-120000 "
        "--data new.csv --out predictions.csv\n"
        "  gradclip predict RUN_DIR --text 'thanks for the fix' --text 'what a mess'\n"
        "  cat comments.txt | gradclip predict RUN_DIR --data -")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="run directory written by gradclip train --task text")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path,
                        help="CSV with the run's text column (labels are not needed); - reads "
                             "standard input: such a CSV, or else one comment per line")
    source.add_argument("--text", action="append", metavar="COMMENT",
                        help="a comment to score (repeat for several)")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV to write: id (or row, counted from 1) and one probability "
                             "column per label, in the input's order (default: "
                             f"{DEFAULT_OUT} for --data FILE; a table on stdout for --text "
                             "and --data -)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from gradclip.app.training.runs import read_config
    from gradclip.app.training.scoring import open_scoring

    if args.data is not None and args.data != STDIN and not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    out = args.out if args.out is not None or args.data in (None, STDIN) else DEFAULT_OUT
    settings = read_config(args.run_dir).task
    if settings["name"] != "text":
        raise UserError(f"{args.run_dir} is a run of --task {settings['name']}; predict is "
                        "for --task text runs")
    labels = settings.get("labels")
    if out is not None and isinstance(labels, list):  # before anything is loaded or said
        check_out(out, [str(label) for label in labels])  # (bad labels: open_scoring says)
    _, task, model, device = open_scoring(args.run_dir, args.device)
    ids, texts = read_comments(args, task.settings)
    first_row = ["id" if ids is not None else "row", *task.label_names]
    if not texts:
        raise UserError(f"{'standard input' if args.data == STDIN else args.data} has no "
                        "data rows")
    with torch.no_grad():
        probabilities = torch.sigmoid(task.predict_logits(model, task.encode(texts), device))
    if out is None:
        print(probability_table(texts, task.label_names, probabilities.tolist()))
        return 0
    write_csv(out, first_row, ids, probabilities.tolist())
    print(f"wrote {len(texts)} rows x {len(task.label_names)} labels to {out}")
    return 0


def read_comments(args: argparse.Namespace, settings: dict
                  ) -> tuple[list[str] | None, list[str]]:
    """The ids (or ``None``) and texts to score: ``--text``, ``--data -`` or ``--data FILE``."""
    from gradclip.app.tasks.text.data import parse_unlabelled, read_unlabelled

    column, delimiter = settings.get("text_column") or "comment_text", \
        settings.get("delimiter") or ","
    if args.text is not None:
        return None, list(args.text)
    if args.data != STDIN:
        return read_unlabelled(args.data, column, delimiter)
    text = read_stdin()
    first_line = text.split("\n", 1)[0]
    if column in (name.strip().strip('"') for name in first_line.split(delimiter)):
        return parse_unlabelled(text, Path("<stdin>"), column, delimiter)
    return None, [line for line in text.splitlines() if line.strip()]


def read_stdin() -> str:
    """Standard input as UTF-8 text (a byte-order mark is allowed)."""
    try:
        return sys.stdin.buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"standard input is not UTF-8 text (offset {error.start})") from None


def probability_table(texts: list[str], labels: tuple[str, ...] | list[str],
                      probabilities: list[list[float]]) -> str:
    """One row per text (shortened to ``SHOWN_CHARS``, on one line), one column per label."""
    shown = [shorten(text) for text in texts]
    width = max(len("text"), *(len(text) for text in shown))
    columns = [max(len(label), 5) for label in labels]
    lines = ["  ".join([f"{'text':<{width}}", *(f"{label:>{size}}"
                                                for label, size in zip(labels, columns,
                                                                       strict=True))])]
    for text, row in zip(shown, probabilities, strict=True):
        lines.append("  ".join([f"{text:<{width}}", *(f"{value:>{size}.3f}" for value, size
                                                      in zip(row, columns, strict=True))]))
    return "\n".join(lines)


def shorten(text: str) -> str:
    """``text`` on one line, cut to ``SHOWN_CHARS`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= SHOWN_CHARS else line[:SHOWN_CHARS - 1] + "…"


def check_out(out: Path, labels: list[str]) -> None:
    """``--out`` may be a new file, or predict's own earlier output for this run's labels
    (a rerun replaces it); never a link, a folder or any other file (a run's config.json, a
    user's data).

    Raises:
        UserError: one line saying which.
    """
    try:
        problem = out_problem(out, labels)
    except OSError as error:  # a name too long, a folder that cannot be read
        raise UserError(f"cannot write --out {out}: {error.strerror}") from None
    if problem:
        raise UserError(f"--out {out} {problem}")


def out_problem(out: Path, labels: list[str]) -> str | None:
    """What keeps ``check_out`` from writing ``out``, or ``None``."""
    import csv

    if out.is_symlink():
        return ("is a symbolic link; predict writes only a plain file (remove the link, or "
                "name another file)")
    if not out.parent.is_dir():
        return f"names a file in {out.parent}, which is not a folder"
    if out.is_dir():
        return "is a directory; give a file name"
    if not out.exists():
        return None
    first_line = ""
    if regular_file_problem(out) is None:  # a FIFO or a device is never opened
        with contextlib.suppress(OSError), open(out, encoding="utf-8", errors="replace") as file:
            first_line = file.readline(HEADER_LIMIT).rstrip("\r\n")
    if next(csv.reader([first_line]), None) not in (["id", *labels], ["row", *labels]):
        return ("exists and is not an earlier predict output of these labels; name a new "
                "file (predict replaces only its own output)")
    return None


def write_csv(out: Path, first_row: list[str], ids: list[str] | None,
              probabilities: list[list[float]]) -> None:
    """``id`` (or ``row``, from 1) and one probability column per label, written whole
    through a temporary file (``rundir.write_text``: never through a link)."""
    import csv
    import io

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(first_row)
    for index, row in enumerate(probabilities):
        key = ids[index] if ids is not None else index + 1
        writer.writerow([key, *(f"{value:.6f}" for value in row)])
    try:
        write_text(out, text.getvalue())
    except UserError as error:
        raise UserError(f"cannot write --out {out}: {error}") from None
