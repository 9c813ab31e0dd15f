"""The values the command line accepts for its enumerated flags, without importing torch.

``gradclip --help`` and argument errors answer before torch is imported (it takes seconds), so
the parser reads its ``choices=`` from here; the modules that act on a choice import these
names, and ``tests/app/test_choices.py`` checks them against the registries (``CELLS``).
"""

from __future__ import annotations

CELL_NAMES = ("rnn", "rnn-relu", "lstm", "gru")  # gradclip.app.cells.CELLS, in its order
TRANSFORMER = "transformer"  # the causal decoder of --task lm (gradclip.app.transformer)
MODEL_NAMES = (*CELL_NAMES, TRANSFORMER)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmdown")
AMP_MODES = ("none", "fp16", "bf16")
PARALLEL_MODES = ("none", "ddp", "fsdp")
NONFINITE_POLICIES = ("propagate", "skip", "error")
FLOAT32_MAX = 3.4028234663852886e38
SUITE_NAMES = ("smoke", "quick", "full")  # gradclip.app.experiments.benchmark.SUITES
