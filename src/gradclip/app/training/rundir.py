"""The run directory: ``config.json``, ``metrics.jsonl``, ``summary.json`` (and ``checkpoint.pt``).

- ``config.json``: everything needed to rebuild the run (``task``, ``model``, ``train``).
- ``metrics.jsonl``: one JSON object per optimizer step, appended and flushed as training
  goes; on resume, lines after the checkpointed step are dropped so the log matches the
  weights.
- ``summary.json``: the outcome, written at the end (and at every checkpoint, so a killed run
  still has one).
- ``.lock``: held (``fcntl.flock``) by the one process writing the folder, for the whole run.

Every file is written through a temporary file of the writing process's own, created with
``O_EXCL | O_NOFOLLOW`` and renamed into place, so a write never follows a symbolic link out
of the folder; a file the project writes that is a link is refused (``refuse_link``), and so
is a folder to resume or plot that holds a link (``refuse_linked_entries``). Every failure of
the file system is one ``UserError`` line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO

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


# Open a file of the folder itself, never what a link of that name points to.
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def link_error(path: Path) -> UserError:
    """One line: a file gradclip writes is a symbolic link, so the write is refused."""
    return UserError(f"{path} is a symbolic link; gradclip writes only plain files inside its "
                     "folders (remove the link, or choose another folder)")


def refuse_link(path: Path) -> None:
    """Raise ``UserError`` if ``path`` is a symbolic link (dangling or not)."""
    if Path(path).is_symlink():
        raise link_error(Path(path))


def refuse_linked_entries(folder: Path) -> None:
    """Refuse a folder to write into that holds a symbolic link, at any depth.

    Raises:
        UserError: an entry is a link (the first one named), or the folder cannot be listed.
    """
    def unreadable(error: OSError) -> None:
        raise os_error(Path(error.filename or folder), error, "read the folder")

    for parent, folders, files in os.walk(folder, onerror=unreadable):
        for name in sorted(folders + files):
            if os.path.islink(os.path.join(parent, name)):
                raise link_error(Path(parent) / name)


def claim_output_folder(out: Path, marker: str | None = None) -> None:
    """Create the ``--out`` folder of ``compare``, ``demo`` or ``benchmark``.

    The folder must be new or empty; with ``marker``, a folder holding that marker file (one
    the command wrote itself, to be resumed) is accepted too, once no link is found in it.
    A new folder gets the marker.

    Raises:
        UserError: a file of that name, a non-empty folder (without the marker), a link in
            a folder to resume, or a folder that cannot be made.
    """
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a folder; choose a new folder")
        if out.is_dir() and any(out.iterdir()):
            if marker is None or not is_plain_file(out / marker):
                resumable = "" if marker is None else (
                    f" (a folder is resumed only when it holds the {marker} that this command "
                    "writes)")
                raise UserError(f"--out {out} is not empty; choose a new folder{resumable}")
            refuse_linked_entries(out)
            return
    except OSError as error:
        raise os_error(out, error, "read the folder") from None
    make_folder(out)
    if marker is not None:
        write_text(out / marker, "written by gradclip; marks a folder it may resume\n")


def is_plain_file(path: Path) -> bool:
    """A regular file, not a symbolic link."""
    return Path(path).is_file() and not Path(path).is_symlink()


def open_no_follow(path: Path, flags: int, doing: str = "write") -> int:
    """``os.open`` that refuses a symbolic link (``O_NOFOLLOW``); a descriptor.

    Raises:
        UserError: the path is a link, or the file system refused.
    """
    path = Path(path)
    refuse_link(path)
    try:
        return os.open(path, flags | NO_FOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise link_error(path) from None
        raise os_error(path, error, doing) from None


def create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file beside ``path``, of this process's own, open for writing.

    Created with ``O_EXCL | O_NOFOLLOW``: never an existing file, never through a link (a
    stale temporary file of the same name, left by a killed process, is removed first).

    Raises:
        UserError: ``path`` is a link, or the file system refused.
    """
    path = Path(path)
    refuse_link(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # unlink removes a link itself, never its target
    except OSError as error:
        raise os_error(path, error) from None
    descriptor = open_no_follow(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    return temporary, os.fdopen(descriptor, "wb")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically: a temporary file (``create_temporary``), then ``os.replace``.

    Raises:
        UserError: ``path`` is a symbolic link, or the file system refused (full disk,
            read-only, missing folder).
    """
    path = Path(path)
    temporary, handle = create_temporary(path)
    try:
        with handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise os_error(path, error) from None


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically, as ``write_bytes`` does.

    Raises:
        UserError: ``path`` is a symbolic link, or the file system refused.
    """
    write_bytes(path, text.encode("utf-8"))


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


def empty_folder(path: Path) -> None:
    """Remove what a refused new run wrote into a folder that was empty before it."""
    for entry in Path(path).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def is_empty_folder(path: Path) -> bool:
    """Nothing in the folder but (maybe) a lock file that gradclip left (``is_left_lock``)."""
    return all(entry.name == LOCK and is_left_lock(entry) for entry in Path(path).iterdir())


def is_left_lock(path: Path) -> bool:
    """A plain file (no link, one name) holding at most a process id: a lock of ours."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > 32:
            return False
        return re.fullmatch(rb"\d*\n?", Path(path).read_bytes()) is not None
    except OSError:
        return False


def lock_holder(run_dir: Path) -> str | None:
    """``another gradclip process (pid N)`` while one holds the folder's lock, else ``None``."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(Path(run_dir) / LOCK, os.O_RDONLY | NO_FOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return holder_named(descriptor)
    finally:
        os.close(descriptor)


def holder_named(descriptor: int) -> str:
    """The process named in a held lock file: its pid when that process is alive."""
    try:
        raw = os.pread(descriptor, 32, 0)
    except OSError:
        raw = b""
    if re.fullmatch(rb"\s*\d+\s*", raw):
        pid = int(raw)
        with contextlib.suppress(OSError, OverflowError):
            os.kill(pid, 0)
            return f"another gradclip process (pid {pid})"
    return "another gradclip process"


class RunLock:
    """The exclusive right to write a run folder, held until ``release`` (or exit).

    An advisory ``fcntl.flock`` on ``<run dir>/.lock``: the operating system drops it when the
    process ends, however it ends, so a killed run never leaves its folder locked. The lock
    file is opened without following links and must be a plain file with one name, since
    the pid is written into it.

    Raises:
        UserError: another process holds the folder (its pid, when alive), or ``.lock`` is a
            link, a second name of another file, or not a file.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.descriptor: int | None = open_no_follow(self.path, os.O_RDWR | os.O_CREAT,
                                                     "create the lock file")
        info = os.fstat(self.descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            self.release()
            raise UserError(f"{self.path} is not a lock file of gradclip (another name of a "
                            "file, or not a file); remove it, or choose another folder")
        if fcntl is None:
            return
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = holder_named(self.descriptor)
            self.release()
            raise UserError(f"{run_dir} is in use by {holder}; wait for it to finish, or "
                            "choose another folder") from None
        try:
            os.ftruncate(self.descriptor, 0)
            os.write(self.descriptor, f"{os.getpid()}\n".encode())
        except OSError as error:
            self.release()
            raise os_error(self.path, error, "write the lock file") from None

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None
