"""The run directory: ``config.json``, ``metrics.jsonl``, ``summary.json`` (and ``checkpoint.pt``).

- ``config.json``: everything needed to rebuild the run (``task``, ``model``, ``train``).
- ``metrics.jsonl``: one JSON object per optimizer step, appended and flushed as training
  goes; on resume, lines after the checkpointed step are dropped so the log matches the
  weights.
- ``summary.json``: the outcome, written at the end (and at every checkpoint, so a killed run
  still has one).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"


def default_run_dir(task: str, model: str, clip: str, root: Path = Path("runs")) -> Path:
    """A new folder ``runs/<task>-<model>-<clip>-<YYYYmmdd-HHMMSS>`` (suffixed if taken)."""
    clip_part = re.sub(r"[^A-Za-z0-9.=_-]+", "_", clip)
    return timestamped_dir(f"{task}-{model}-{clip_part}", root)


def timestamped_dir(prefix: str, root: Path = Path("runs")) -> Path:
    """A folder ``<root>/<prefix>-<YYYYmmdd-HHMMSS>`` that does not exist yet (``-2``, ... if taken)."""
    base = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return candidate


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats written as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary file + ``os.replace``)."""
    temporary = Path(path).with_suffix(".json.tmp")
    temporary.write_text(json.dumps(json_safe(value), indent=2) + "\n")
    os.replace(temporary, path)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json``; a missing folder or file, or bad JSON, is a ``UserError``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    path = run_dir / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a gradclip run directory: {CONFIG} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"corrupt {path}: not valid JSON") from None
    if not isinstance(config, dict) or not {"task", "model", "train"} <= config.keys():
        raise UserError(f"corrupt {path}: expected the keys task, model and train")
    return config


class MetricsLog:
    """Appends one JSON line per optimizer step to ``metrics.jsonl``."""

    def __init__(self, run_dir: Path, keep_through_step: int | None = None):
        self.path = Path(run_dir) / METRICS
        if keep_through_step is not None:
            truncate_after(self.path, keep_through_step)
        self.handle = open(self.path, "a")  # noqa: SIM115 (kept open for the whole run)

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(json_safe(record)) + "\n")

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def truncate_after(path: Path, step: int) -> None:
    """Keep only complete records with ``step <= step`` (drop later and torn lines)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record.get("step", math.inf) > step:
            break
        kept.append(line + "\n")
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(kept))
    os.replace(temporary, path)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
