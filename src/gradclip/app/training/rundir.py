"""The run directory: ``config.json``, ``metrics.jsonl``, ``summary.json`` (and ``checkpoint.pt``).

- ``config.json``: everything needed to rebuild the run (``task``, ``model``, ``train``).
- ``metrics.jsonl``: one JSON object per optimizer step, appended and flushed as training
  goes; on resume, lines after the checkpointed step are dropped so the log matches the
  weights.
- ``summary.json``: the outcome, written at the end (and at every checkpoint, so a killed run
  still has one).
- ``.lock``: held (``fcntl.flock``) by the one process writing the folder, for the whole run.

Every file is written through a temporary file of the writing process's own and renamed
into place, and every failure of the file system is one ``UserError`` line naming the path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then the user's promise
    fcntl = None

CONFIG, METRICS, SUMMARY, LOCK = "config.json", "metrics.jsonl", "summary.json", ".lock"


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


def os_error(path: Path, error: OSError, doing: str = "write") -> UserError:
    """One line naming the path and the system's reason."""
    reason = error.strerror or type(error).__name__
    return UserError(f"cannot {doing} {path}: {reason}")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: a temporary file of this process's own, then ``os.replace``.

    Raises:
        UserError: the file system refused (full disk, read-only, missing folder).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise os_error(path, error) from None


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (non-finite floats as strings, see ``json_safe``)."""
    write_text(path, json.dumps(json_safe(value), indent=2) + "\n")


def make_folder(path: Path) -> Path | None:
    """Create ``path`` and its missing parents; the topmost folder this call created, if any.

    Raises:
        UserError: a file stands in the way, the name is too long, or no permission.
    """
    path = Path(path)
    if path.is_dir():
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        path.mkdir(parents=True)
        return top
    except FileExistsError:
        if path.is_dir():
            return None
        kind = "a dangling symbolic link" if path.is_symlink() else "a file"
        raise UserError(f"cannot create the folder {path}: {kind} of that name exists") from None
    except OSError as error:
        raise os_error(path, error, "create the folder") from None


def remove_folder(path: Path) -> None:
    """Remove a folder this process created and must not leave behind."""
    shutil.rmtree(path, ignore_errors=True)


def is_empty_folder(path: Path) -> bool:
    """Nothing in the folder but (maybe) its lock file."""
    return all(entry.name == LOCK for entry in Path(path).iterdir())


class RunLock:
    """The exclusive right to write a run folder, held until ``release`` (or exit).

    An advisory ``fcntl.flock`` on ``<run dir>/.lock``: the operating system drops it when the
    process ends, however it ends, so a killed run never leaves its folder locked.

    Raises:
        UserError: another process holds the folder.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        try:
            self.descriptor: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise os_error(self.path, error, "create the lock file") from None
        if fcntl is None:
            return
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.descriptor)
            self.descriptor = None
            raise UserError(f"{run_dir} is in use by another gradclip process; wait for it to "
                            "finish, or choose another folder") from None
        os.ftruncate(self.descriptor, 0)
        os.write(self.descriptor, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


@dataclass(frozen=True)
class LogRepair:
    """What resuming did to ``metrics.jsonl``: records kept, unreadable lines, steps missing."""

    kept: int
    unreadable: int
    missing: int

    def warning(self, path: Path, step: int) -> str | None:
        """One line for stderr when records were lost, else ``None``."""
        if not (self.unreadable or self.missing):
            return None
        return (f"gradclip: warning: {path}: kept {self.kept} records up to step {step}; "
                f"dropped {self.unreadable} unreadable line(s); {self.missing} step(s) "
                "missing from the log")


def truncate_after(path: Path, step: int) -> LogRepair:
    """Keep every valid record with ``step <= step``, in order; skip blank lines.

    Records after ``step`` (written after the checkpoint a resume starts from) are dropped as
    expected; unreadable lines and steps missing from ``1..step`` are counted.
    """
    if not path.exists():
        return LogRepair(0, 0, step)
    kept: dict[int, str] = {}
    unreadable = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            number = record["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            unreadable += 1
            continue
        if isinstance(number, int) and 1 <= number <= step:
            kept.setdefault(number, line + "\n")
    write_text(path, "".join(kept[number] for number in sorted(kept)))
    return LogRepair(len(kept), unreadable, step - len(kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
