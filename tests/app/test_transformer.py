"""The causal transformer of ``--task lm --model transformer``: shapes, causality, GPT-2 init."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradclip.app.transformer import TransformerLanguageModel


def tiny(**sizes) -> TransformerLanguageModel:
    torch.manual_seed(0)
    values = {"context": 16, "width": 32, "layers": 2, "heads": 4, **sizes}
    return TransformerLanguageModel(11, **values)


def test_the_output_is_next_character_logits_at_every_position():
    model = tiny()
    logits = model(torch.randint(0, 11, (3, 16)))
    assert logits.shape == (3, 16, 11)
    assert model(torch.randint(0, 11, (2, 5))).shape == (2, 5, 11)  # shorter than the context


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, 15), token=st.integers(0, 10), seed=st.integers(0, 1000))
def test_changing_a_future_token_leaves_earlier_logits_unchanged(position, token, seed):
    model = tiny(dropout=0.0).eval()
    inputs = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(seed))
    changed = inputs.clone()
    changed[:, position] = token
    before, after = model(inputs), model(changed)
    torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=0)


def test_a_changed_token_does_reach_the_positions_after_it():
    model = tiny().eval()
    inputs = torch.zeros(1, 16, dtype=torch.long)
    changed = inputs.clone()
    changed[0, 3] = 5
    assert not torch.allclose(model(inputs)[:, 3:], model(changed)[:, 3:])


def test_the_output_head_is_the_token_embedding():
    model = tiny()
    assert model.head.weight is model.token_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert "head.weight" not in names and "token_embedding.weight" in names


def test_initialisation_is_gpt2s_with_residual_projections_scaled_by_depth():
    model = TransformerLanguageModel(500, context=64, width=256, layers=8, heads=4)
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        assert block.attention.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.attention.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert not block.attention.qkv.bias.any() and not block.mlp.expand.bias.any()
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.position_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_weight_decay_applies_to_matrices_and_embeddings_only():
    model = tiny()
    decayed, plain = model.parameter_groups(1e-3)
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_windows_longer_than_the_context_are_refused():
    with pytest.raises(ValueError, match="more than the model's context of 16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(("sizes", "message"), [
    ({"width": 30, "heads": 4}, "width must be a multiple of heads"),
    ({"layers": 0}, "layers must be a positive integer"),
    ({"context": 0}, "context must be a positive integer"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
])
def test_impossible_sizes_are_a_value_error_naming_the_argument(sizes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**sizes)
