"""A recurrent character language model trained with truncated backpropagation through time.

The training text is cut into ``streams`` parallel streams; each optimizer step reads the next
window of ``seq_len`` characters of every stream. The hidden state at the end of a window is
the initial state of the next one (detached, so backpropagation is truncated at the window
boundary) and starts again from zeros at each pass over the text. That carried state, and the
count of windows read, are buffers of the model: they are in its ``state_dict``, so a resumed
run carries exactly the state the uninterrupted one carried.

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks", ICML (character-level language modelling, the "natural problem" where they
    observed exploding gradients); Williams & Peng (1990), "An efficient gradient-based
    algorithm for on-line training of recurrent network trajectories" (truncated BPTT).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app.cells import CELLS

State = Any  # a hidden-state tensor, or (h, c) for an LSTM


class RecurrentLanguageModel(nn.Module):
    """Embedding -> stacked recurrent layers -> per-step logits over the vocabulary.

    ``forward(inputs, lengths=None)`` takes long ``(B, T)`` ids and returns ``(B, T, vocab)``
    logits. In training mode it carries the hidden state over from the previous window
    (restarting every ``windows_per_epoch`` windows); in eval mode every call starts from zeros
    (``run`` carries a state explicitly, for scoring a whole stream).
    """

    windows_done: Tensor  # a buffer (register_buffer), declared for type checkers

    def __init__(self, cell: str, vocab_size: int, *, streams: int, windows_per_epoch: int,
                 embed_dim: int = 128, hidden_size: int = 64, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        module, options = CELLS[cell]
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = module(embed_dim, hidden_size, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0, **options)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        self.windows_per_epoch = max(1, windows_per_epoch)
        shape = (layers, streams, hidden_size)
        self.register_buffer("carried_h", torch.zeros(shape))
        self.register_buffer("carried_c", torch.zeros(shape if cell == "lstm" else (0,)))
        self.register_buffer("windows_done", torch.zeros((), dtype=torch.long))

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        if not self.training:
            return self.run(inputs, None)[0]
        logits, state = self.run(inputs, self.carried_state())
        self.carry(state)
        return logits

    def run(self, inputs: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Logits of one window from ``state`` (``None``: zeros), and the state after it."""
        outputs, state = self.rnn(self.dropout(self.embedding(inputs)), state)
        return self.head(self.dropout(outputs)), state

    def carried_state(self) -> State:
        """The state to start this window from: zeros at the start of each pass, else the
        carried one (chosen on the device: no host sync)."""
        keep = self.windows_done % self.windows_per_epoch != 0
        hidden = torch.where(keep, self.carried_h, torch.zeros_like(self.carried_h))
        if not self.carried_c.numel():
            return hidden
        return hidden, torch.where(keep, self.carried_c, torch.zeros_like(self.carried_c))

    def carry(self, state: State) -> None:
        """Keep the state for the next window (a new tensor: backward still needs the old)."""
        hidden, cell = state if isinstance(state, tuple) else (state, None)
        self.carried_h = hidden.detach().clone()
        if cell is not None:
            self.carried_c = cell.detach().clone()
        self.windows_done = self.windows_done + 1
