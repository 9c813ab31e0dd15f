"""``gradclip``: the command line (``gradclip train | eval | demo | ...``).

Every user mistake ends as one line ``gradclip: error: <message>`` on stderr and exit status
2 (argparse mistakes add a one-line hint to ``--help``); a traceback means a bug in gradclip.

The parser is built without importing torch: only the module of the command being run is
imported (the others appear in ``--help`` from the summaries in ``COMMANDS``), and command
modules import torch inside their run functions. So ``gradclip --help``, ``--version`` and
argument errors answer at once; torch is imported after the arguments are known to be good
(``import gradclip`` loads the library's names on first use).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import NoReturn

from gradclip._version import __version__
from gradclip.app.commands import COMMANDS
from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import Interrupted, TrainingError, UserError
from gradclip.app.task_flags import refuse_ignored_task_flags, refuse_model_mismatch


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a two-line error (the mistake, then a hint) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"hint: run '{self.prog} --help' for the options and their defaults\n")


def version() -> str:
    """``gradclip X (torch Y)``: gradclip's from ``gradclip._version``, torch's from its
    installed distribution's metadata (no torch import)."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"gradclip {__version__} (torch {torch_version})"


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> ArgumentParser:
    """The parser, with the full parser of the command ``argv`` names (or of every command)."""
    parser = ArgumentParser(
        prog="gradclip", formatter_class=HelpFormatter,
        description="Train recurrent models with gradient clipping, compare strategies, and "
                    "see why they work.")
    parser.add_argument("--version", action="version", version=version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = chosen_command(argv)
    for name, summary in COMMANDS.items():
        if chosen in (name, "*"):
            importlib.import_module(f"gradclip.app.commands.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)  # listed in --help, never parsed
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, checked (``SystemExit`` on ``--help``, ``--version`` and mistakes).

    Besides argparse's checks: flags the chosen task ignores, and each command's own
    ``check(args)`` (its ``set_defaults``), all before torch is imported.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "task", None) is not None and getattr(args, "resume", None) is None:
            defaults = vars(parser.parse_args([args.command]))
            refuse_ignored_task_flags(args, defaults)
            if hasattr(args, "model"):
                refuse_model_mismatch(args, defaults)
        if getattr(args, "check", None) is not None:
            args.check(args)
    except UserError as error:
        raise SystemExit(fail(str(error), UserError.exit_code)) from None
    return args


def fail(message: str, code: int) -> int:
    print(f"gradclip: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status (0 ok, 1 training failed, 2 user error).

    Standard output that cannot be written (a reader that went away, ``| head``; a full
    device) ends the command with one line on stderr and status 2, never silently with 0.
    """
    try:
        code = args.run(args)
        sys.stdout.flush()  # a block-buffered stdout fails here, not at interpreter exit
        return code
    except UserError as error:
        return fail(str(error), UserError.exit_code)
    except TrainingError as error:
        return fail(str(error), 1)
    except Interrupted as error:
        return fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as error:
        if not stdout_failed(error):
            raise
        return fail(f"cannot write to standard output: {error.strerror or error}; stopped "
                    "(what was written to files stays)", UserError.exit_code)


# What a print to a closed pipe or a full device raises (a file of ours is a UserError).
STDOUT_ERRORS = (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG,
                 getattr(errno, "EDQUOT", errno.ENOSPC))


def stdout_failed(error: OSError) -> bool:
    """``error`` came from writing standard output (a print names no file), or stdout cannot
    take its pending text; stdout is then silenced (``os.devnull``) so that the interpreter's
    last flush cannot fail again."""
    failed = error.filename is None and error.errno in STDOUT_ERRORS
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        failed = True
    if failed:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return failed


def interrupt_once(signum: int, frame: object) -> None:
    """SIGINT handler: the first Ctrl-C interrupts; any later one is ignored (the process is
    already on its way out, reporting the first in one line)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def console(command: Callable[[], int]) -> int:
    """Run a console script's ``command`` so that any number of Ctrl-C prints one line.

    Without this, a second Ctrl-C within milliseconds of the first interrupts the
    interpreter's exit ("Exception ignored in atexit callback ... KeyboardInterrupt").
    """
    previous = signal.signal(signal.SIGINT, interrupt_once)
    try:
        code = command()
    except KeyboardInterrupt:  # before a handler of the command caught it
        code = fail("interrupted", 130)
    signal.signal(signal.SIGINT, signal.SIG_IGN if previous is signal.default_int_handler
                  else previous)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training failed, 2 user error)."""
    return run(parse(argv))
