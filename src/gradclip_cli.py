"""The ``gradclip`` console script: arguments checked before torch is imported.

``import gradclip`` does not import torch (the package's names load on first use), and the
command line imports only the command being run; torch, which takes seconds, is imported
once the arguments are known to be good, or when parsing first needs the library (a
clipping spec to check). So ``gradclip --help``, ``--version`` and argument errors answer at
once, and a Ctrl-C while torch is still importing is one line too. ``python -m gradclip``
runs this same ``main``. It also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch
loads, so that the application's own processes never spin on a busy machine
(``gradclip.app.cpus``).
"""

from __future__ import annotations

import importlib
import signal
import sys


def import_uninterrupted(name: str) -> bool:
    """Import the module ``name``; ``False`` if Ctrl-C came meanwhile.

    A ``KeyboardInterrupt`` raised inside torch's import can leave a C extension half
    loaded (numpy then fails with a traceback), so the interrupt waits for the import.
    """
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        importlib.import_module(name)
    finally:
        signal.signal(signal.SIGINT, previous)
    return not interrupted


def main() -> int:
    """Parse the arguments, then import torch and run the command (``cli.console``:
    one line for any number of Ctrl-C)."""
    if sys.stdout is None:  # started with stdout closed (``>&-``): Python gives None
        print("gradclip: error: standard output is closed; redirect it to a file or "
              "/dev/null instead", file=sys.stderr)
        return 2
    try:
        from gradclip.app import cli
        from gradclip.app.cpus import passive_openmp

        passive_openmp()  # before torch loads its OpenMP runtime, which reads it once
    except KeyboardInterrupt:
        print("gradclip: error: interrupted", file=sys.stderr)
        return 130

    def parse_and_run() -> int:
        args = cli.parse()
        if not import_uninterrupted("torch"):
            raise KeyboardInterrupt
        return cli.run(args)

    return cli.console(parse_and_run)


if __name__ == "__main__":
    raise SystemExit(main())
