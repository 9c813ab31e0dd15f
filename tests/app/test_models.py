"""Recurrent models: padding never reaches the output; the reverse pass matches packing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gradclip.app.models import (
    CELLS,
    RecurrentModel,
    masked_max_mean_pool,
    reverse_within_lengths,
    valid_mask,
)

ARCHITECTURES = [(cell, bidirectional, readout) for cell in CELLS
                 for bidirectional in (False, True) for readout in ("last", "pool")]


def token_model(cell: str, bidirectional: bool, readout: str) -> RecurrentModel:
    torch.manual_seed(0)
    return RecurrentModel(cell, 3, vocab_size=20, pad_id=0, embed_dim=8, hidden_size=6,
                          layers=2, bidirectional=bidirectional, readout=readout).eval()


@pytest.mark.parametrize(("cell", "bidirectional", "readout"), ARCHITECTURES)
def test_padded_row_gives_the_output_of_the_same_row_unpadded(cell, bidirectional, readout):
    model = token_model(cell, bidirectional, readout)
    short = torch.randint(1, 20, (1, 4))
    padded = torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    longer = torch.randint(1, 20, (1, 9))
    batch_output = model(torch.cat([longer, padded]), torch.tensor([9, 4]))
    alone_output = model(short, torch.tensor([4]))
    torch.testing.assert_close(batch_output[1], alone_output[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("cell", "bidirectional", "readout"), ARCHITECTURES)
def test_values_in_the_padding_do_not_change_the_output(cell, bidirectional, readout):
    model = token_model(cell, bidirectional, readout)
    tokens = torch.randint(1, 20, (3, 8))
    lengths = torch.tensor([8, 5, 2])
    garbage = tokens.clone()
    for row, length in enumerate(lengths):
        garbage[row, length:] = torch.randint(1, 20, (8 - length,))
    assert torch.equal(model(tokens, lengths), model(garbage, lengths))


def test_reversal_within_lengths_keeps_padding_in_place_and_is_its_own_inverse():
    sequences = torch.arange(10.0).view(2, 5, 1)
    lengths = torch.tensor([5, 3])
    reversed_rows = reverse_within_lengths(sequences, lengths)
    assert reversed_rows[1, :, 0].tolist() == [7.0, 6.0, 5.0, 8.0, 9.0]
    assert torch.equal(reverse_within_lengths(reversed_rows, lengths), sequences)


def test_bidirectional_layer_matches_pack_padded_sequence():
    torch.manual_seed(1)
    gru = nn.GRU(4, 5, batch_first=True, bidirectional=True)
    model = RecurrentModel("gru", 1, input_size=4, hidden_size=5, bidirectional=True,
                           readout="pool")
    for direction, suffix in enumerate(["", "_reverse"]):
        for name in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]:
            getattr(model.layers[0].directions[direction], name).data.copy_(
                getattr(gru, name + suffix).data)
    inputs, lengths = torch.randn(4, 7, 4), torch.tensor([7, 2, 5, 1])
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    reference, _ = pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=7)
    ours = model.layers[0](inputs, lengths)
    mask = valid_mask(lengths, 4, 7, inputs.device).unsqueeze(2)
    torch.testing.assert_close(ours * mask, reference, atol=1e-6, rtol=1e-5)


def test_masked_pooling_ignores_large_padding_values():
    outputs = torch.tensor([[[1.0], [3.0], [100.0]]])
    pooled = masked_max_mean_pool(outputs, torch.tensor([[True, True, False]]))
    assert pooled.tolist() == [[3.0, 2.0]]


def test_continuous_model_reads_the_state_at_each_rows_last_step():
    torch.manual_seed(0)
    model = RecurrentModel("rnn", 1, input_size=2, hidden_size=4).eval()
    inputs = torch.randn(2, 6, 2)
    full = model(inputs[:1, :3], None)
    assert torch.allclose(model(inputs, torch.tensor([3, 6]))[0], full[0], atol=1e-6)


def test_model_rejects_both_or_neither_input_kinds():
    with pytest.raises(ValueError, match="exactly one"):
        RecurrentModel("lstm", 1)
