"""Toxic-comment CSV files (the Jigsaw format): reading, validation and the train/validation split.

A file holds a ``comment_text`` column, any subset of the label columns in ``LABELS`` (0/1,
multi-label) and optionally ``id``. Fields may hold newlines inside quotes; the file must be
UTF-8. A comment is cut to its first ``MAX_COMMENT_CHARS`` characters when it is read.
Every mistake in the file is a ``UserError`` with one line that names the file, and the
row and column where it applies; the comments themselves are never echoed (they are offensive
by nature). Rows whose text is empty are skipped and counted.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gradclip.app.errors import UserError
from gradclip.app.tasks.base import seeded_generator
from gradclip.app.untrusted import DATA_LIMIT, read_bytes

TEXT_COLUMN = "comment_text"
LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")

# The default csv field limit (128 KiB) is below what a pasted comment can reach.
_FIELD_SIZE_LIMIT = 2**31 - 1
# Characters kept of each comment; the rest is cut when the file is read, before tokenizing (a
# 200 MB comment made the Rust tokenizer take 12 GB and abort). The longest comment of the
# Jigsaw files has 5,000 characters, and 256 tokens (the default --max-len) hold about 1,000.
MAX_COMMENT_CHARS = 100_000
# Salt for the split's generator, so the split never shares a stream with the batch order.
_SPLIT_KEY = 0x5B117


@dataclass(frozen=True)
class CommentTable:
    """The usable rows of a comment file.

    Attributes:
        texts: comment text of each kept row, in file order.
        targets: float ``(rows, labels)`` 0/1 matrix.
        label_names: the label columns, in the order of ``targets``' columns.
        rows_read: data rows in the file (kept plus skipped).
        skipped_empty: rows skipped because their text was empty or only whitespace.
    """

    texts: list[str]
    targets: Tensor
    label_names: tuple[str, ...]
    rows_read: int
    skipped_empty: int


def read_comments(path: str | Path, labels: list[str] | tuple[str, ...] | None = None,
                  missing_ok: bool = False, text_column: str = TEXT_COLUMN,
                  delimiter: str = ",") -> CommentTable:
    """Read and validate a comment CSV; ``labels`` picks label columns (default: all present).

    With ``missing_ok``, names in ``labels`` that the file lacks are left out (at least one
    must be present); otherwise each missing one is a ``UserError``. ``text_column`` names
    the comment column, ``delimiter`` the field separator (one character).
    """
    path = Path(path)
    rows = _reader(read_utf8_text(path), delimiter)
    previous_limit = csv.field_size_limit(_FIELD_SIZE_LIMIT)
    try:
        header = [name.strip() for name in _next_row(rows, path)]
        text_at, label_names = _columns(header, labels, path, missing_ok, text_column)
        label_at = [header.index(name) for name in label_names]
        texts, targets, rows_read = [], [], 0
        for row in _data_rows(rows, path):
            rows_read += 1
            text = row[text_at][:MAX_COMMENT_CHARS] if text_at < len(row) else ""
            if not text.strip():
                continue
            texts.append(text)
            targets.append([_label(row, at, header[at], rows_read, path) for at in label_at])
    finally:
        csv.field_size_limit(previous_limit)
    if not texts:
        raise UserError(f"{path}: no row has any comment text ({rows_read} data rows read)")
    return CommentTable(texts, torch.tensor(targets, dtype=torch.float32), tuple(label_names),
                        rows_read, rows_read - len(texts))


def read_comment_texts(path: str | Path, text_column: str = TEXT_COLUMN,
                       delimiter: str = ",") -> list[str]:
    """The non-empty ``comment_text`` fields of a comment CSV, in file order (labels optional).

    Raises:
        UserError: the file cannot be read, is not CSV, or has no (or two) text columns.
    """
    _, texts = read_unlabelled(path, text_column, delimiter)
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise UserError(f"{path}: no row has any comment text")
    return texts


def read_unlabelled(path: str | Path, text_column: str = TEXT_COLUMN, delimiter: str = ","
                    ) -> tuple[list[str] | None, list[str]]:
    """Every data row's ``id`` (``None`` without an ``id`` column) and text, in file order;
    empty texts are kept (``gradclip predict`` answers every row).

    Raises:
        UserError: the file cannot be read, is not CSV, or has no (or two) text columns.
    """
    path = Path(path)
    return parse_unlabelled(read_utf8_text(path), path, text_column, delimiter)


def parse_unlabelled(text: str, source: Path, text_column: str = TEXT_COLUMN,
                     delimiter: str = ",") -> tuple[list[str] | None, list[str]]:
    """``read_unlabelled`` of CSV text already read (standard input); ``source`` names it in
    errors."""
    rows = _reader(text, delimiter)
    previous_limit = csv.field_size_limit(_FIELD_SIZE_LIMIT)
    try:
        header = [name.strip() for name in _next_row(rows, source)]
        if header.count(text_column) != 1:
            if text_column not in header:
                _no_text_column(header, source, text_column)
            raise UserError(f"{source} must have one '{text_column}' column, it has "
                            f"{header.count(text_column)}")
        at = header.index(text_column)
        id_at = header.index("id") if header.count("id") == 1 else None
        ids, texts = [], []
        for row in _data_rows(rows, source):
            texts.append(row[at][:MAX_COMMENT_CHARS] if at < len(row) else "")
            if id_at is not None:
                ids.append(row[id_at] if id_at < len(row) else "")
    finally:
        csv.field_size_limit(previous_limit)
    return (ids if id_at is not None else None), texts


def _reader(text: str, delimiter: str):
    if len(delimiter) != 1 or delimiter in "\"\r\n":
        raise UserError(f"--delimiter must be one character other than a quote or a newline, "
                        f"got {delimiter!r}")
    # strict: a quote that never closes is an error, not the rest of the file in one field
    return csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)


def _no_text_column(header: list[str], path: Path, text_column: str) -> None:
    hint = " (is --delimiter right?)" if len(header) == 1 else ""
    raise UserError(f"{path} has no '{text_column}' column (its columns: "
                    f"{', '.join(header) or 'none'}){hint}; name the comment column with "
                    "--text-column NAME")


def read_utf8_text(path: Path, expected: str = f"a CSV with a header row ({TEXT_COLUMN},"
                   f"{','.join(LABELS)})") -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is allowed).

    Raises:
        UserError: a missing, unreadable, non-UTF-8 or empty file, or one that is not a
            regular file (``expected`` says what an empty file should have held).
    """
    try:
        raw = read_bytes(path, DATA_LIMIT)  # a regular file only: never /dev/zero, a FIFO
    except FileNotFoundError:
        raise UserError(f"data file not found: {path}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                        f"{error.start}); save it as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path} is empty; expected {expected}")
    return text


def _next_row(rows, path: Path) -> list[str]:
    try:
        return next(rows)
    except csv.Error as error:
        raise UserError(f"{path} is not a readable CSV file: {error}") from None


def _data_rows(rows, path: Path):
    """The data rows, skipping blank lines; a CSV syntax error becomes a ``UserError``."""
    while True:
        start = rows.line_num + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                raise UserError(f"{path} line {start}: unterminated quote (the quoted field "
                                "that opens there never closes)") from None
            raise UserError(f"{path} line {rows.line_num}: not valid CSV: {error}") from None
        if row:
            yield row


def _columns(header: list[str], labels, path: Path, missing_ok: bool,
             text_column: str = TEXT_COLUMN) -> tuple[int, list[str]]:
    """Index of the text column and the label columns to use, checked against the header."""
    for name in (text_column, *LABELS, *(labels or ())):
        if header.count(name) > 1:
            raise UserError(f"{path} has the column '{name}' {header.count(name)} times; "
                            "keep one (which one to read would be a guess)")
    if text_column not in header:
        _no_text_column(header, path, text_column)
    if text_column in (labels if labels is not None else LABELS):
        raise UserError(f"--text-column {text_column} is a label column, and a model that "
                        "reads its own labels scores perfectly without learning; name the "
                        "column that holds the comments")
    if labels is None:
        present = [name for name in LABELS if name in header]
        if not present:
            raise UserError(f"{path} has no label column; expected one or more of "
                            f"{', '.join(LABELS)} (name yours with --labels a,b)")
        return header.index(text_column), present
    labels = list(labels)
    if missing_ok:
        labels = [name for name in labels if name in header] or labels[:1]
    if not labels:
        raise UserError("--labels is empty; name one or more label columns")
    for name in labels:
        if name not in header or name == text_column:
            known = [column for column in header if column != text_column]
            raise UserError(f"label column '{name}' is not in {path} (its other columns: "
                            f"{', '.join(known) or 'none'}); choose them with --labels a,b")
    if len(set(labels)) != len(labels):
        raise UserError(f"--labels names a column twice: {','.join(labels)}")
    return header.index(text_column), labels


def _label(row: list[str], at: int, name: str, row_number: int, path: Path) -> float:
    """One 0/1 label value; anything else names the row and the column."""
    value = row[at].strip() if at < len(row) else None
    if value in ("0", "1", "0.0", "1.0"):
        return float(value)
    shown = "missing" if value is None else repr(value[:20])
    raise UserError(f"{path} row {row_number}: label '{name}' must be 0 or 1, got {shown}")


def split_rows(n_rows: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Row indices of the training and validation splits, a pure function of the arguments.

    Rule: a seeded random permutation of ``range(n_rows)``; its first
    ``max(1, round(val_fraction * n_rows))`` rows are the validation split, the rest (sorted)
    the training split. Both are sorted, so they read in file order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if n_rows < 2:
        raise UserError(f"need at least 2 rows with comment text to split into training and "
                        f"validation, got {n_rows}")
    n_val = min(n_rows - 1, max(1, round(val_fraction * n_rows)))
    order = torch.randperm(n_rows, generator=seeded_generator(seed, _SPLIT_KEY))
    return order[n_val:].sort().values, order[:n_val].sort().values
