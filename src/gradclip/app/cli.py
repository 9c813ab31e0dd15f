"""``gradclip``: the command line (``gradclip train | eval | demo | ...``).

Every user mistake ends as one line ``gradclip: error: <message>`` on stderr and exit status
2 (argparse mistakes add a one-line hint to ``--help``); a traceback means a bug in gradclip.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch

import gradclip
from gradclip.app.commands import COMMANDS
from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import Interrupted, TrainingError, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a two-line error (the mistake, then a hint) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"hint: run '{self.prog} --help' for the options and their defaults\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="gradclip", formatter_class=HelpFormatter,
        description="Train recurrent models with gradient clipping, compare strategies, and "
                    "see why they work.")
    parser.add_argument("--version", action="version",
                        version=f"gradclip {gradclip.__version__} (torch {torch.__version__})")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"gradclip.app.commands.{name}").register(subparsers)
    return parser


def fail(message: str, code: int) -> int:
    print(f"gradclip: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training failed, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        return fail(str(error), UserError.exit_code)
    except TrainingError as error:
        return fail(str(error), 1)
    except Interrupted as error:
        return fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # the reader (`| head`) went away: not an error of ours; silence the final flush too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
