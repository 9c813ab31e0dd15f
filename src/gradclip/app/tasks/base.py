"""The protocol every training task follows (synthetic tasks and text classification).

A task owns its data and its scoring; the trainer (``gradclip.app.training.trainer``) owns everything else.
The contract, in the order the loop uses it:

Construction
    ``Task.from_options(options)`` builds a task from the ``gradclip train`` flags (a
    ``gradclip.app.config.TaskOptions``; read only the attributes you need, each always present:
    ``seed``, ``batch_size``, ``seq_len``, ``data``, ``vocab_size``, ``max_len``, ``labels``,
    ``val_fraction``; an unused one may be ``None``). Raise
    ``gradclip.app.errors.UserError`` (one actionable line) for anything the user got wrong.

Shape of the model the task needs (plain attributes, read by ``gradclip.app.models``)
    ``name``            the registry name ("adding", "temporal-order", "text").
    ``input_kind``      "continuous": ``inputs`` is float ``(B, T, input_size)``;
                        "tokens": ``inputs`` is long ``(B, T)`` token ids, padded with ``pad_id``.
    ``input_size``      features per time step (continuous tasks; ``None`` for tokens).
    ``vocab_size``, ``pad_id``   (token tasks; ``None`` for continuous ones).
    ``output_size``     width of the model's output (1 for regression, n classes, n labels).
    ``readout``         "last": the model reads the final hidden state at each row's length
                        (synthetic tasks); "pool": masked max + mean pooling over time (text);
                        "next": logits at every step, the state carried across windows (lm).
    ``metric_name``     the task's headline metric ("mse", "accuracy", "mean_roc_auc").
    ``higher_is_better``  direction of ``metric_name``.

Training data, a pure function of (seed, index), so that a resumed run sees exactly the
batches the uninterrupted one saw and no data state needs checkpointing
    ``train_batch(index) -> Batch`` for micro-batch ``index`` = 0, 1, 2, ... (under gradient
    accumulation optimizer step ``s`` consumes indices ``s * accumulate ... + accumulate - 1``).
    Epoch-based tasks derive the epoch's batch order from ``(seed, index // batches_per_epoch)``
    and take position ``index % batches_per_epoch`` in it. Use a local
    ``torch.Generator``/``random.Random``/``numpy.random.Generator`` seeded from ``(seed,
    index)`` or ``(seed, epoch)``; never the global RNGs (the model's dropout uses those).
    ``batches_per_epoch``: number of micro-batches in one pass over the training split, or
    ``None`` for infinite (synthetic) tasks; ``--epochs N`` trains
    ``ceil(N * batches_per_epoch / accumulate)`` optimizer steps.

Loss and evaluation
    ``loss(outputs, batch) -> Tensor``: scalar mean loss of a batch (``outputs`` is the
    model's ``(B, output_size)`` result; the loop divides by ``accumulate`` itself).
    ``evaluate(model, device) -> dict``: score the held-out validation set. The loop calls it
    with ``model.eval()`` under ``torch.no_grad()`` and puts the model back in train mode.
    The dict holds floats (or bools, ints), at least ``"loss"`` and ``metric_name``;
    synthetic tasks add ``"success"`` (bool, the task's standard criterion) and say the
    criterion in ``success_criterion`` (a short string); other tasks may add anything
    JSON-serialisable (``per_label`` dicts, counts).

Saving and rebuilding (for ``--resume`` and ``gradclip eval``)
    ``config() -> dict``: JSON-serialisable settings, always including ``"name"``; stored in
    ``config.json`` under ``"task"``.
    ``save(run_dir)``: write any artefact the task needs to be rebuilt (the text task's
    tokenizer, e.g. ``run_dir / "tokenizer.json"``); default: nothing.
    ``Task.from_config(config, run_dir, training=True)``: rebuild the task exactly from
    ``config()`` and the artefacts in ``run_dir``. With ``training=False`` (``gradclip eval``)
    the task must not need its training data (only tokenizer and labels).
    ``evaluate_file(model, path, device) -> dict``: score another data file (``gradclip
    eval RUN_DIR --data CSV``); only the text task implements it, and its dict holds at least
    ``"mean_roc_auc"`` and ``"per_label"`` (label -> {"roc_auc", "accuracy", "positives"}),
    plus ``"loss"`` and ``"accuracy"``.
    ``describe() -> dict``: facts for ``summary.json`` and the end-of-run summary (rows read,
    rows skipped for empty text, split sizes, ...); default: ``{}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError


@dataclass(frozen=True)
class Batch:
    """One micro-batch.

    Attributes:
        inputs: float ``(B, T, input_size)`` or long token ids ``(B, T)``.
        lengths: long ``(B,)`` valid length of each row (CPU tensor), or ``None`` when every
            row is ``T`` long. Positions at or after a row's length are padding and must
            never change the model's output.
        targets: float ``(B, output_size)``/``(B,)`` or long ``(B,)`` class ids, as the task's
            ``loss`` expects.
    """

    inputs: Tensor
    lengths: Tensor | None
    targets: Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The batch with inputs and targets on ``device`` (lengths stay on the CPU)."""
        return Batch(self.inputs.to(device), self.lengths, self.targets.to(device))


class Task:
    """Base class of the training tasks; see the module docstring for the full contract."""

    name: ClassVar[str]
    input_kind: str = "continuous"
    input_size: int | None = None
    vocab_size: int | None = None
    pad_id: int | None = None
    output_size: int
    readout: str = "last"
    metric_name: str
    higher_is_better: bool
    success_criterion: str | None = None
    batches_per_epoch: int | None = None
    default_steps: int | None = None  # steps when neither --steps nor --epochs is given
    distributed = True  # whether DDP/FSDP runs can split its batches over ranks
    not_distributed_because = ""  # where it cannot: why, for the one-line refusal

    @classmethod
    def from_options(cls, options: TaskOptions) -> Task:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any], run_dir: Path, training: bool = True) -> Task:
        raise NotImplementedError

    def train_batch(self, index: int) -> Batch:
        raise NotImplementedError

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, run_dir: Path) -> None:
        """Write artefacts needed by ``from_config`` into ``run_dir``; default: none."""

    def describe(self) -> dict[str, Any]:
        """Facts about the data for the summary; default: none."""
        return {}

    def evaluate_file(self, model: nn.Module, path: Path, device: torch.device) -> dict[str, Any]:
        """Score another data file; only tasks that read files support it."""
        raise UserError(f"task {self.name!r} has no data file to score; `gradclip eval` is "
                        "for runs of --task text")


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from integer keys, e.g. ``(seed, index)``.

    Mixes the keys with a 64-bit multiplicative hash so that neighbouring keys give unrelated
    streams and no key tuple depends on the global RNG.
    """
    state = 0x9E3779B97F4A7C15
    for key in keys:
        state = (state ^ (int(key) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return torch.Generator().manual_seed(state & 0x7FFFFFFFFFFFFFFF)
