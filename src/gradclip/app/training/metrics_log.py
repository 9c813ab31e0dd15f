"""Reading ``metrics.jsonl``: every record checked, a damaged log repaired and reported.

The log may be torn by a crash, edited by hand or crafted, so each line is untrusted. A
record is kept only if it is a JSON object whose ``step`` is a positive integer (``true`` is
not one) and whose numbers are numbers a float can hold (``loss``, ``grad_norm``,
``threshold``, ``lr``, the per-layer norms and the scores: not ``"abc"``, not a 400-digit
integer). Of the rest:

- the longest run of records in step order is kept (``longest_in_order``), the others are
  dropped as out of order (a forged record at the end never displaces the real one);
- a step that appears more than once in that run is dropped in every copy (which one is the
  real record would be a guess, and a copy must never displace it);
- on resume, records after the checkpointed step are dropped without a word (the run wrote
  them after its last checkpoint and will write them again).

Each kind of loss is counted and said in one warning line; a log that cannot be read at all (a
folder in its place, a link to ``/dev/zero``) is one ``UserError`` line.
"""

from __future__ import annotations

import bisect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError
from gradclip.app.training.rundir import METRICS, write_text
from gradclip.app.untrusted import LOG_LIMIT, is_number, read_bytes

NUMBER_FIELDS = ("loss", "grad_norm", "threshold", "lr")


@dataclass(frozen=True)
class LogRepair:
    """What reading ``metrics.jsonl`` dropped, by reason, and the steps it lacks."""

    kept: int
    unreadable: int = 0
    invalid_step: int = 0
    bad_value: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    missing: int = 0

    @property
    def dropped(self) -> int:
        return (self.unreadable + self.invalid_step + self.bad_value + self.duplicated
                + self.out_of_order)

    def warning(self, path: Path, step: int | None = None) -> str | None:
        """One line for stderr when records were dropped or are missing, else ``None``."""
        if not (self.dropped or self.missing):
            return None
        upto = "" if step is None else f" up to step {step}"
        reasons = [f"{self.unreadable} unreadable line(s)"] + [
            f"{count} {words}" for count, words in (
                (self.invalid_step, "record(s) without a positive integer step"),
                (self.bad_value, "record(s) with a value that is no number"),
                (self.duplicated, "record(s) of a duplicated step"),
                (self.out_of_order, "record(s) out of step order")) if count]
        missing = "" if step is None else f"; {self.missing} step(s) missing from the log"
        return (f"gradclip: warning: {path}: kept {self.kept} records{upto}; dropped "
                f"{', '.join(reasons)}{missing}")


def read_log(path: Path, up_to: int | None = None
             ) -> tuple[list[tuple[str, dict[str, Any]]], LogRepair]:
    """The valid records of a ``metrics.jsonl`` in step order, each with its line.

    Args:
        path: the log.
        up_to: drop records after this step without counting them (a resume's checkpoint).

    Returns:
        ``[(line, record), ...]`` and what was dropped (``missing``: steps of ``1..up_to``
        absent; 0 without ``up_to``).

    Raises:
        FileNotFoundError: there is no log.
        UserError: the log is not a regular file, or is larger than ``LOG_LIMIT``.
    """
    text = read_bytes(path, LOG_LIMIT).decode("utf-8", errors="replace")
    candidates: list[tuple[int, str, dict[str, Any]]] = []
    unreadable = invalid = bad_value = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        record = _parse(line)
        if record is None:
            unreadable += 1
            continue
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            invalid += 1
        elif not numbers_hold(record):
            bad_value += 1
        elif up_to is None or step <= up_to:
            candidates.append((step, line, record))
    in_order = [candidates[index] for index in longest_in_order(
        [step for step, _, _ in candidates])]
    counts: dict[int, int] = {}
    for step, _, _ in in_order:
        counts[step] = counts.get(step, 0) + 1
    kept = [item for item in in_order if counts[item[0]] == 1]
    repair = LogRepair(len(kept), unreadable, invalid, bad_value, len(in_order) - len(kept),
                       len(candidates) - len(in_order),
                       0 if up_to is None else up_to - len(kept))
    return [(line, record) for _, line, record in kept], repair


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # bad JSON, deep nesting, thousands of digits
        return None
    return record if isinstance(record, dict) else None


def number(value: Any) -> float:
    """A metrics value as a float (``"nan"``/``"inf"`` strings and ``None`` as NaN)."""
    return math.nan if value is None else float(value)


def numbers_hold(record: dict[str, Any]) -> bool:
    """Whether the record's numbers are numbers: ``NUMBER_FIELDS``, every per-layer norm, and
    every numeric score of an ``eval`` entry (``--eval-every``) a float can hold."""
    layers, scores = record.get("layer_grad_norms") or {}, record.get("eval") or {}
    return (all(is_number(record.get(field)) for field in NUMBER_FIELDS)
            and isinstance(layers, dict) and all(is_number(v) for v in layers.values())
            and isinstance(scores, dict) and all(
                is_number(v) for v in scores.values()
                if isinstance(v, int | float) and not isinstance(v, bool)))


def longest_in_order(steps: list[int]) -> list[int]:
    """Indices of a longest non-decreasing subsequence of ``steps``, in O(n log n)
    (patience sorting): the records in step order, equal steps kept to be seen as duplicates."""
    tails: list[int] = []  # tails[k]: the smallest last step of an ordered run of k + 1
    tail_at: list[int] = []
    previous = [-1] * len(steps)
    for index, step in enumerate(steps):
        length = bisect.bisect_right(tails, step)
        if length == len(tails):
            tails.append(step)
            tail_at.append(index)
        else:
            tails[length], tail_at[length] = step, index
        previous[index] = tail_at[length - 1] if length else -1
    chain, index = [], tail_at[-1] if tail_at else -1
    while index >= 0:
        chain.append(index)
        index = previous[index]
    return chain[::-1]


def truncate_after(path: Path, step: int) -> LogRepair:
    """Rewrite the log with its valid records up to ``step``, in order (on resume).

    Raises:
        UserError: the log cannot be read (see ``read_log``) or rewritten.
    """
    try:
        records, repair = read_log(path, up_to=step)
    except FileNotFoundError:
        return LogRepair(0, missing=step)
    write_text(path, "".join(line + "\n" for line, _ in records))
    return repair


def read_metrics(run_dir: Path, warn: bool = True) -> list[dict[str, Any]]:
    """The valid records of a run's ``metrics.jsonl``, in step order.

    Args:
        run_dir: the run folder.
        warn: print one warning line on stderr when records were dropped.

    Raises:
        UserError: no log, or one that cannot be read.
    """
    path = Path(run_dir) / METRICS
    try:
        records, repair = read_log(path)
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no {METRICS}: is it a gradclip run folder?") from None
    warning = repair.warning(path)
    if warn and warning:
        print(warning, file=sys.stderr)
    return [record for _, record in records]
