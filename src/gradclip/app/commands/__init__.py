"""The ``gradclip`` subcommands, one module each; each exposes ``register(subparsers)``.

``register`` adds its parser and ``set_defaults(run=<function(args) -> exit code>)``. Add a
command by writing ``commands/<name>.py`` and listing it in ``COMMANDS`` with the one-line
summary ``gradclip --help`` shows (the module's own ``help=``; a test checks they agree).

The command line imports only the module of the command it runs, and a command module imports
torch (and anything heavy) inside its run function, never at the top: ``gradclip --help`` and
argument errors answer before torch is imported (``tests/e2e/test_cli_startup.py``).
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "train": "train a model on a task (or resume a run)",
    "eval": "score a trained model on another file (text: a CSV; lm: a text, in bits per char)",
    "predict": "score unlabelled comments with a trained text model",
    "demo": "train a vanilla RNN with and without clipping and compare",
    "profile": "measure gradient norms without clipping and recommend thresholds",
    "plot": "write PNG plots of a run directory's metrics.jsonl into it",
    "compare": "train the same task under several clipping specs and seeds, report",
    "benchmark": "run every clipping strategy on the same tasks and seeds, report",
}
