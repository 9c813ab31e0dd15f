"""The setting of ``gradclip demo``, without importing torch (its ``--help`` prints it).

The adding problem at T=10 on a vanilla RNN with SGD at lr 0.15: unclipped, the gradient norm
explodes within a few hundred steps; clipped by norm, the model learns.
"""

from __future__ import annotations

STRATEGIES = ("none", "norm:1.0", "value:0.5", "value:0.01")
SEQ_LEN, HIDDEN, LR, MOMENTUM, BATCH = 10, 64, 0.15, 0.9, 64
SCHEDULE = "warmdown"  # lr 0.15 for 80% of the steps, where it explodes; then decayed
EVAL_EVERY = 100  # validation MSE every 100 steps, to report when a run first reached < 0.01
TITLE = (f"adding problem T={SEQ_LEN}, vanilla RNN (tanh, {HIDDEN} hidden), batch {BATCH}\n"
         f"SGD lr {LR} momentum {MOMENTUM}, {SCHEDULE} schedule (linear decay to 0 over the "
         "last 20% of the steps)")
