"""SIGINT and SIGTERM during training: finish the step, checkpoint, stop with one line.

A signal never tears a step in half: the handler only records it, the trainer reads the
record between steps (OR-ed over ranks, so every rank stops after the same step), writes a
final checkpoint and ``summary.json`` with status ``interrupted``, and raises
``Interrupted``; the CLI exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The first stop signal received while training, if any."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, number: int, frame: object) -> None:
        if self.signal is None:
            self.signal = number

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Record SIGINT/SIGTERM instead of dying mid-step; the old handlers come back after.

    Outside the main thread (where handlers cannot be installed) nothing is recorded.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request) for number in SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
