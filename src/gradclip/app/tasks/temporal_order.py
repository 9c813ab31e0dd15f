"""The temporal-order problem: classify the order of two relevant symbols among distractors.

A sequence of ``T`` one-hot symbols starts with ``B`` and ends with ``E``; every other step is
a distractor from ``a, b, c, d`` except two, which hold ``X`` or ``Y``: the first at a step
drawn from ``[T/10, 2T/10)``, the second from ``[5T/10, 6T/10)``. The class is the ordered
pair (``XX, XY, YX, YY``): chance is 25% accuracy; the task counts as learnt at validation
accuracy >= 99% (error below 1%, the success rule Pascanu et al. 2013 take from Martens &
Sutskever 2011).

References:
    Hochreiter & Schmidhuber 1997, "Long Short-Term Memory" (experiment 6a, temporal order);
    Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from gradclip.app.tasks.base import Batch
from gradclip.app.tasks.synthetic import SyntheticTask

SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
DISTRACTORS = 4  # a, b, c, d are symbols 0..3
RELEVANT = 4  # X = 4, Y = 5
BEGIN, END = 6, 7
SUCCESS_ACCURACY = 0.99


class TemporalOrderTask(SyntheticTask):
    """The temporal-order problem (Hochreiter & Schmidhuber 1997) at length ``seq_len``."""

    name = "temporal-order"
    input_size = len(SYMBOLS)
    output_size = 4
    readout = "last"
    metric_name = "accuracy"
    higher_is_better = True
    success_criterion = f"validation accuracy >= {SUCCESS_ACCURACY:.0%} (chance: 25%)"
    min_seq_len = 10
    default_seq_len = 20

    def generate(self, count: int, generator: torch.Generator) -> Batch:
        """``count`` one-hot sequences and their class ``2 * first + second`` (X=0, Y=1)."""
        steps = self.seq_len
        symbols = torch.randint(0, DISTRACTORS, (count, steps), generator=generator)
        first = torch.randint(steps // 10, 2 * steps // 10, (count,), generator=generator)
        second = torch.randint(5 * steps // 10, 6 * steps // 10, (count,), generator=generator)
        relevant = torch.randint(0, 2, (count, 2), generator=generator)
        rows = torch.arange(count)
        symbols[rows, first] = RELEVANT + relevant[:, 0]
        symbols[rows, second] = RELEVANT + relevant[:, 1]
        symbols[:, 0], symbols[:, -1] = BEGIN, END
        inputs = functional.one_hot(symbols, len(SYMBOLS)).float()
        return Batch(inputs, None, 2 * relevant[:, 0] + relevant[:, 1])

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return functional.cross_entropy(outputs.float(), batch.targets)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        outputs = self.validation_outputs(model, device)
        targets = self.validation.targets.to(device)
        loss = functional.cross_entropy(outputs, targets).item()
        accuracy = (outputs.argmax(dim=1) == targets).float().mean().item()
        return {"loss": loss, "accuracy": accuracy, "success": accuracy >= SUCCESS_ACCURACY}
