"""The models a run builds (``build_model``): recurrent models (vanilla RNN, LSTM, GRU) for
variable-length batches without packing, and the language models (``language_model``,
``transformer``).

Padding never reaches the result:

- the forward direction is causal, so its outputs before a row's length ignore what follows;
- the reverse direction runs over each row reversed *within its own length* (the padding
  stays at the end), then the outputs are reversed back;
- the readout reads only valid positions: the state at ``length - 1`` (and the reverse
  direction's state at 0), or max + mean pooling with padding masked out.

This gives the outputs of ``pack_padded_sequence`` (to float rounding) without its backward,
which is slow on CPU in torch 2.13 (mostly ``aten::fill_``); the README gives the measured
figures (``benchmarks/variable_length.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app.cells import CELLS
from gradclip.app.choices import TRANSFORMER
from gradclip.app.errors import UserError
from gradclip.app.language_model import RecurrentLanguageModel
from gradclip.app.transformer import TransformerLanguageModel

READOUTS = ("last", "pool")


def reverse_within_lengths(sequences: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each row of ``(B, T, F)`` over its first ``length`` steps; padding stays put.

    Index rule: position ``t < L`` takes ``L - 1 - t``; ``t >= L`` keeps ``t``. The map is its
    own inverse, so the same call reverses the outputs back.
    """
    if lengths is None:
        return sequences.flip(1)
    steps = torch.arange(sequences.shape[1], device=sequences.device)
    lengths = lengths.to(sequences.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return sequences.gather(1, index.unsqueeze(2).expand_as(sequences))


def valid_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """Bool ``(B, T)``: True at positions before each row's length."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device) < lengths.to(device).unsqueeze(1)


def last_valid(outputs: Tensor, lengths: Tensor | None) -> Tensor:
    """``(B, F)``: each row's output at position ``length - 1``."""
    if lengths is None:
        return outputs[:, -1]
    index = (lengths.to(outputs.device) - 1).clamp(min=0).view(-1, 1, 1)
    return outputs.gather(1, index.expand(-1, 1, outputs.shape[2])).squeeze(1)


def masked_max_mean_pool(outputs: Tensor, mask: Tensor) -> Tensor:
    """``(B, 2F)``: max and mean over valid positions only (padding masked out)."""
    valid = mask.unsqueeze(2)
    lowest = torch.finfo(outputs.dtype).min
    pooled_max = outputs.masked_fill(~valid, lowest).amax(dim=1)
    count = valid.sum(dim=1).clamp(min=1).to(outputs.dtype)
    pooled_mean = outputs.masked_fill(~valid, 0.0).sum(dim=1) / count
    return torch.cat([pooled_max, pooled_mean], dim=1)


class RecurrentLayer(nn.Module):
    """One recurrent layer, one single-direction module per direction."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        module, options = CELLS[cell]
        self.directions = nn.ModuleList(
            module(input_size, hidden_size, batch_first=True, **options)
            for _ in range(2 if bidirectional else 1)
        )

    def forward(self, sequences: Tensor, lengths: Tensor | None) -> Tensor:
        forward_outputs, _ = self.directions[0](sequences)
        if len(self.directions) == 1:
            return forward_outputs
        reversed_outputs, _ = self.directions[1](reverse_within_lengths(sequences, lengths))
        backward_outputs = reverse_within_lengths(reversed_outputs, lengths)
        return torch.cat([forward_outputs, backward_outputs], dim=2)


class RecurrentModel(nn.Module):
    """Embedding (token input) -> stacked recurrent layers -> readout -> linear head.

    ``forward(inputs, lengths=None)`` takes float ``(B, T, input_size)`` or long ``(B, T)``
    token ids and returns ``(B, output_size)``. Readout ``"last"``: the top layer's state at
    each row's last valid step (with the reverse direction's state at step 0 when
    bidirectional); ``"pool"``: masked max and mean over valid steps. Dropout applies to
    embeddings, between layers and before the head.
    """

    def __init__(
        self,
        cell: str,
        output_size: int,
        *,
        input_size: int | None = None,
        vocab_size: int | None = None,
        pad_id: int | None = None,
        embed_dim: int = 128,
        hidden_size: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        readout: str = "last",
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size (continuous) or vocab_size (tokens)")
        self.embedding = None
        if vocab_size is not None:
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
            input_size = embed_dim
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            RecurrentLayer(cell, input_size if i == 0 else hidden_size * directions,
                           hidden_size, bidirectional)
            for i in range(layers)
        )
        self.readout = readout
        self.dropout = nn.Dropout(dropout)
        features = hidden_size * directions * (2 if readout == "pool" else 1)
        self.head = nn.Linear(features, output_size)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        sequences = inputs if self.embedding is None else self.embedding(inputs)
        sequences = self.dropout(sequences) if self.embedding is not None else sequences
        for index, layer in enumerate(self.layers):
            if index > 0:
                sequences = self.dropout(sequences)
            sequences = layer(sequences, lengths)
        return self.head(self.dropout(self.read(sequences, lengths)))

    def read(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """The readout features ``(B, F)`` of the top layer's outputs ``(B, T, H*dirs)``."""
        if self.readout == "pool":
            mask = valid_mask(lengths, outputs.shape[0], outputs.shape[1], outputs.device)
            return masked_max_mean_pool(outputs, mask)
        final_forward = last_valid(outputs, lengths)
        if not self.bidirectional:
            return final_forward
        hidden = outputs.shape[2] // 2
        return torch.cat([final_forward[:, :hidden], outputs[:, 0, hidden:]], dim=1)


def build_model(task: Any, cell: str, hidden_size: int, layers: int, bidirectional: bool,
                dropout: float, embed_dim: int, heads: int = 0) -> nn.Module:
    """The model a task needs (input kind, output size, readout) with the chosen architecture.

    Raises:
        UserError: the transformer for a task that does not feed it independent windows (a
            hand-edited ``config.json``).
    """
    if cell == TRANSFORMER:
        if getattr(task, "windows", None) != "independent":
            raise UserError(f"--model {TRANSFORMER} needs --task lm with independent windows; "
                            f"the run's task is {task.name} "
                            f"({getattr(task, 'windows', 'no windows')})")
        return TransformerLanguageModel(task.vocab_size, context=task.seq_len,
                                        width=hidden_size, layers=layers, heads=heads,
                                        dropout=dropout)
    if hasattr(task, "build_model"):  # a task with a model of its own (text: wide & deep)
        return task.build_model(cell=cell, hidden_size=hidden_size, layers=layers,
                                bidirectional=bidirectional, dropout=dropout, embed_dim=embed_dim)
    if task.readout == "next":
        if getattr(task, "windows", "streams") != "streams":
            raise UserError(f"--model {cell} needs the carried streams of --task lm; the "
                            f"run's task reads {task.windows} windows (for --model "
                            f"{TRANSFORMER})")
        return RecurrentLanguageModel(cell, task.vocab_size, streams=task.batch_size,
                                      windows_per_epoch=task.windows_per_epoch,
                                      embed_dim=embed_dim, hidden_size=hidden_size,
                                      layers=layers, dropout=dropout)
    tokens = task.input_kind == "tokens"
    return RecurrentModel(
        cell, task.output_size,
        input_size=None if tokens else task.input_size,
        vocab_size=task.vocab_size if tokens else None,
        pad_id=task.pad_id if tokens else None,
        embed_dim=embed_dim, hidden_size=hidden_size, layers=layers,
        bidirectional=bidirectional, dropout=dropout, readout=task.readout,
    )
