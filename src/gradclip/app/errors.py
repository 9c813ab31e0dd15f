"""The one exception type for user mistakes in the application."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: a missing or malformed file, a bad flag value, a bad run dir.

    The message is one actionable line (what was given, what is expected). The CLI prints it
    as ``gradclip: error: <message>`` on stderr and exits with status 2, without a traceback;
    any other exception reaching the CLI is a bug in gradclip.
    """

    exit_code = 2


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite gradient under ``nonfinite="error"``); exit 1."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after a final checkpoint; exit 128 + the signal."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number
