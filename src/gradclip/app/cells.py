"""The recurrent cells a model can be built from (``--model``): module and its options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

# the constructor of each cell (nn.RNN/LSTM/GRU take (input_size, hidden_size, ...))
CELLS: dict[str, tuple[Callable[..., nn.RNNBase], dict[str, Any]]] = {
    "rnn": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
}
