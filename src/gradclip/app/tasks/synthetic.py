"""Shared machinery of the synthetic long-range tasks: batches generated from (seed, index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.tasks.base import Batch, Task, seeded_generator

VALIDATION_SIZE = 1000
VALIDATION_INDEX = -1  # the validation set's generator key; training batches use index >= 0


class SyntheticTask(Task):
    """An infinite stream of generated sequences of length ``seq_len``.

    Subclasses set ``name``, ``min_seq_len`` and implement ``generate`` and the scoring.
    Training batch ``index`` is ``generate(batch_size, seeded_generator(seed, index))``; the
    validation set is a fixed ``VALIDATION_SIZE`` sequences from key ``(seed, -1)``.
    """

    min_seq_len: int = 2
    default_seq_len: int = 10

    def __init__(self, seq_len: int, batch_size: int, seed: int):
        if seq_len < self.min_seq_len:
            raise UserError(f"--seq-len must be at least {self.min_seq_len} for the {self.name} "
                            f"task, got {seq_len}")
        if batch_size < 1:
            raise UserError(f"--batch-size must be a positive integer, got {batch_size}")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.validation = self.generate(VALIDATION_SIZE, seeded_generator(seed, VALIDATION_INDEX))

    @classmethod
    def from_options(cls, options: TaskOptions) -> SyntheticTask:
        seq_len = cls.default_seq_len if options.seq_len is None else options.seq_len
        return cls(seq_len, options.batch_size, options.seed)

    @classmethod
    def from_config(cls, config: dict[str, Any], run_dir: Path, training: bool = True
                    ) -> SyntheticTask:
        return cls(config["seq_len"], config["batch_size"], config["seed"])

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "seed": self.seed, "validation_size": VALIDATION_SIZE}

    def generate(self, count: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def train_batch(self, index: int) -> Batch:
        return self.generate(self.batch_size, seeded_generator(self.seed, index))

    def validation_outputs(self, model: nn.Module, device: torch.device) -> Tensor:
        """The model's outputs on the validation set, in chunks of 500 sequences."""
        batch = self.validation.to(device)
        return torch.cat([model(chunk, None) for chunk in batch.inputs.split(500)]).float()
