"""Reading a file that someone else may have written: a run folder's, or a data file.

Rule: only a regular file is read (a link to ``/dev/zero``, a FIFO or a folder in its place is
refused before a byte is read), never more than a stated number of bytes, and JSON is parsed
without a crash on deep nesting (``RecursionError``) or on a number of thousands of digits
(Python refuses to convert more than 4,300). Each failure is one ``UserError`` line naming the
path; what the content must hold is checked by the reader that knows it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError

MiB = 2**20
CONFIG_LIMIT = 16 * MiB  # config.json, summary.json
LOG_LIMIT = 4096 * MiB  # metrics.jsonl, training_rows.txt
DATA_LIMIT = 64 * 1024 * MiB  # a CSV or text file given with --data / --text-file

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
          (stat.S_ISSOCK, "a socket"))


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` (links followed) is not a regular file to read, or ``None`` if it is one.

    Raises:
        FileNotFoundError: nothing (or a dangling link) is there.
    """
    return _not_regular(os.stat(path).st_mode)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "something else")
    return f"it is {kind}, not a regular file"


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refused above ``limit`` bytes.

    Raises:
        FileNotFoundError: the file is missing (the caller says what that means).
        UserError: not a regular file, larger than ``limit``, or unreadable.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    try:
        info = os.fstat(descriptor)
        problem = _not_regular(info.st_mode)
        if problem:
            raise UserError(f"cannot read {path}: {problem}")
        if info.st_size > limit:
            raise UserError(f"cannot read {path}: {info.st_size:,} bytes, more than the "
                            f"{limit:,} such a file may hold")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            # the size fstat gave: a file that grows meanwhile (a live log) is cut there
            return handle.read(info.st_size)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    finally:
        os.close(descriptor)


def read_text(path: Path, limit: int, encoding: str = "utf-8") -> str:
    """The text of the regular file at ``path`` (see ``read_bytes``).

    Raises:
        FileNotFoundError: the file is missing.
        UserError: as ``read_bytes``, or bytes that are not ``encoding``.
    """
    data = read_bytes(path, limit)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise UserError(f"corrupt {path}: not {encoding.upper()} text (byte "
                        f"0x{data[error.start]:02x} at offset {error.start})") from None


def parse_json(text: str, source: str | Path) -> Any:
    """``json.loads(text)``, with every way it can fail as one ``UserError`` naming ``source``.

    Raises:
        UserError: invalid JSON, nesting deeper than Python's recursion allows, or an integer
            of more digits than Python converts.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"corrupt {source}: JSON nested too deeply") from None
    except json.JSONDecodeError as error:
        raise UserError(f"corrupt {source}: not valid JSON ({error.msg} at line "
                        f"{error.lineno})") from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"corrupt {source}: a number with too many digits") from None


def read_json(path: Path, limit: int = CONFIG_LIMIT) -> Any:
    """The JSON value of the regular file at ``path`` (UTF-8, at most ``limit`` bytes).

    Raises:
        FileNotFoundError: the file is missing.
        UserError: as ``read_text`` and ``parse_json``.
    """
    return parse_json(read_text(path, limit), path)


NON_FINITE_WORDS = ("nan", "inf", "-inf")  # how the run files write non-finite floats


def is_number(value: Any, missing_ok: bool = True) -> bool:
    """Whether a JSON value read from a run file stands for a float: an int or float that a
    float can hold (not ``true``, not a 400-digit integer), "nan"/"inf"/"-inf" as the run files
    write them, or ``None`` where ``missing_ok``."""
    if value is None:
        return missing_ok
    if isinstance(value, str):
        return value in NON_FINITE_WORDS
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True
