"""The ``gradclip`` subcommands, one module each; each exposes ``register(subparsers)``.

``register`` adds its parser and ``set_defaults(run=<function(args) -> exit code>)``. Add a
command by writing ``commands/<name>.py`` and listing it in ``COMMANDS``.
"""

from __future__ import annotations

COMMANDS: tuple[str, ...] = ("train", "eval", "demo", "profile", "plot", "compare",
                             "benchmark")
