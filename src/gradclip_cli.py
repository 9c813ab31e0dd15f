"""The ``gradclip`` console script: a Ctrl-C while torch is still importing is one line too.

The entry point lives outside the ``gradclip`` package because importing the package imports
torch, which takes seconds; a ``KeyboardInterrupt`` raised there would otherwise end in a
traceback before ``gradclip.app.cli.main`` could catch it.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Import the CLI and run it; an interrupt during start-up exits 130 with one line."""
    try:
        from gradclip.app.cli import main as run
    except KeyboardInterrupt:
        print("gradclip: error: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
