"""A finished grid run's own files, read back: ``summary.json`` and ``monitor.json``.

``compare``, ``benchmark`` and ``demo`` keep the runs an earlier invocation finished and build
their reports from these files. A run folder travels and may be edited, so each file is read
with the bounded reader (``gradclip.app.untrusted``) and every field a report uses is checked
before use: a bad one ends as one line naming the file and the field, never as a traceback
in the middle of a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError
from gradclip.app.training.rundir import SUMMARY
from gradclip.app.untrusted import is_number, read_json

MONITOR = "monitor.json"
COUNTS = ("step", "clipped_steps", "skipped_steps", "nonfinite_loss_steps")
NUMBERS = ("seconds", "max_grad_norm", "final_train_loss")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json``, checked; ``None`` when there is none.

    Raises:
        UserError: not a regular file, too large, not JSON, or a field of the wrong kind.
    """
    path = Path(run_dir) / SUMMARY
    try:
        summary = read_json(path)
    except FileNotFoundError:
        return None
    return check_summary(summary, path)


def check_summary(summary: Any, path: Path) -> dict[str, Any]:
    """``summary`` if every field the reports read has its kind, else one ``UserError``."""
    if not isinstance(summary, dict):
        raise UserError(f"corrupt {path}: expected a JSON object")

    def bad(field: str, kind: str) -> UserError:
        return UserError(f"corrupt {path}: {field} must be {kind}, got {summary.get(field)!r:.60}")

    if not isinstance(summary.get("status"), str):
        raise bad("status", "a string")
    for field in COUNTS:
        value = summary.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(field, "an integer >= 0")
    for field in NUMBERS:
        if not is_number(summary.get(field)):
            raise bad(field, "a number")
    scores = summary.get("eval")
    if scores is not None and not (isinstance(scores, dict) and all(
            is_number(value) or isinstance(value, bool | dict) for value in scores.values())):
        raise bad("eval", "an object of scores")
    return summary


def read_monitor(run_dir: Path) -> dict[str, Any] | None:
    """The monitor's last report (``monitor.json``), checked; ``None`` when there is none.

    Raises:
        UserError: not a regular file, too large, not JSON, or time profiles that are not
            lists of numbers by name.
    """
    path = Path(run_dir) / MONITOR
    try:
        monitored = read_json(path)
    except FileNotFoundError:
        return None
    if not isinstance(monitored, dict):
        raise UserError(f"corrupt {path}: expected a JSON object")
    profiles = monitored.get("time_profiles") or {}
    if not (isinstance(profiles, Mapping) and all(
            isinstance(profile, list) and all(is_number(v, missing_ok=False) for v in profile)
            for profile in profiles.values())):
        raise UserError(f"corrupt {path}: time_profiles must map names to lists of numbers")
    return monitored
