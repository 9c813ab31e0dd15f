"""The adding problem: sum the two marked numbers of a long sequence.

Each step carries two features: a number drawn uniformly from [0, 1] and a marker. Exactly two
steps are marked, one in each half of the sequence; the target is the sum of the two marked
numbers. Always predicting 1 scores MSE 1/6 ≈ 0.167 (the variance of the sum of two uniforms);
the task counts as learnt when the validation MSE falls below 0.01.

References:
    Hochreiter & Schmidhuber 1997, "Long Short-Term Memory" (experiment 4, the adding
    problem); the two-halves marker placement of Le, Jaitly & Hinton 2015, "A Simple Way to
    Initialize Recurrent Networks of Rectified Linear Units".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from gradclip.app.tasks.base import Batch
from gradclip.app.tasks.synthetic import SyntheticTask

SUCCESS_MSE = 0.01
BASELINE_MSE = 1.0 / 6.0


class AddingTask(SyntheticTask):
    """The adding problem (Hochreiter & Schmidhuber 1997) at sequence length ``seq_len``."""

    name = "adding"
    input_size = 2
    output_size = 1
    readout = "last"
    metric_name = "mse"
    higher_is_better = False
    success_criterion = f"validation MSE < {SUCCESS_MSE} (predicting 1 always: {BASELINE_MSE:.3f})"
    min_seq_len = 2
    default_seq_len = 10

    def generate(self, count: int, generator: torch.Generator) -> Batch:
        """``count`` sequences: numbers in [0, 1), one marker in each half, target = their sum."""
        half = self.seq_len // 2
        numbers = torch.rand(count, self.seq_len, generator=generator)
        first = torch.randint(0, half, (count,), generator=generator)
        second = torch.randint(half, self.seq_len, (count,), generator=generator)
        markers = torch.zeros(count, self.seq_len)
        rows = torch.arange(count)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = numbers[rows, first] + numbers[rows, second]
        return Batch(torch.stack([numbers, markers], dim=2), None, targets)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return functional.mse_loss(outputs.squeeze(1).float(), batch.targets)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        outputs = self.validation_outputs(model, device).squeeze(1)
        mse = functional.mse_loss(outputs, self.validation.targets.to(device)).item()
        return {"loss": mse, "mse": mse, "success": mse < SUCCESS_MSE}
