"""Row-sparse checkpoint tensors: compacted when mostly zero, restored bit for bit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradclip.app.errors import UserError
from gradclip.app.training.checkpoint import load_checkpoint, rng_states, save_checkpoint
from gradclip.app.training.compact import MIN_ELEMENTS, ROWS_MARK, compact, expand


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.view(torch.int32), b.view(torch.int32))


def sparse_rows(rows: int = 2**14, width: int = 6, filled=(3, 7, 9)) -> torch.Tensor:
    tensor = torch.zeros(rows, width)
    for row in filled:
        tensor[row] = torch.randn(width)
    return tensor


@settings(max_examples=25, deadline=None)
@given(filled=st.sets(st.integers(0, 2**14 - 1), max_size=200),
       special=st.sampled_from([-0.0, float("nan"), float("inf"), 1e-45]))
def test_a_compacted_tensor_comes_back_with_every_bit(filled, special):
    tensor = sparse_rows(filled=filled)
    tensor[5, 2] = special  # -0.0 marks its row too: its sign must survive
    stored = compact({"w": tensor})["w"]
    assert isinstance(stored, dict) and stored[ROWS_MARK] == 1
    assert stored["values"].shape[0] == len(filled | {5})
    assert same_bits(expand({"w": stored})["w"], tensor)


def test_dense_small_and_integer_tensors_are_left_as_they_are():
    dense = torch.randn(2**14, 6)
    small = torch.zeros(10, 6)
    steps = torch.zeros(MIN_ELEMENTS, dtype=torch.bool)
    state = {"a": dense, "b": small, "c": [steps], "d": 3, "e": torch.tensor(1.0)}
    out = compact(state)
    assert out["a"] is dense and out["b"] is small and out["c"][0] is steps
    assert out["d"] == 3 and out["e"] is state["e"]


def test_a_checkpoint_with_a_sparse_optimizer_state_is_smaller_and_reads_back_exactly(tmp_path):
    weight = sparse_rows(rows=2**17)
    state = {"model": {"wide.weight": weight}, "step": 4,
             "optimizer": {"state": {0: {"exp_avg": weight * 0.5, "step": torch.tensor(4.0)}},
                           "param_groups": [{"lr": 0.1, "params": [0]}]},
             "scheduler": {}, "clipper": {}, "next_batch_index": 4, "counters": {},
             "rng": rng_states()}
    save_checkpoint(tmp_path, state)
    assert (tmp_path / "checkpoint.pt").stat().st_size < weight.numel() * 4 // 100
    loaded = load_checkpoint(tmp_path)
    assert same_bits(loaded["model"]["wide.weight"], weight)
    assert same_bits(loaded["optimizer"]["state"][0]["exp_avg"], weight * 0.5)


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("rows", torch.tensor([3, 3], dtype=torch.int32), "increasing"),
    ("rows", torch.tensor([3, 2**14], dtype=torch.int32), "increasing and below"),
    ("rows", torch.tensor([3.0, 4.0]), "int32"),
    ("values", torch.zeros(2, 5), "values must have shape"),
    ("shape", [2**14, -6], "bad shape"),
    ("shape", [2**40, 6], "holds more than"),  # never allocated
])
def test_a_hand_made_sparse_entry_is_one_line_naming_what_is_wrong(tmp_path, field, bad,
                                                                   message):
    entry = {ROWS_MARK: 1, "rows": torch.tensor([3, 7], dtype=torch.int32),
             "values": torch.ones(2, 6), "shape": [2**14, 6]}
    torch.save({"model": {"w": {**entry, field: bad}}, "optimizer": {}, "step": 1},
               tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match=f"corrupt checkpoint .*{message}"):
        load_checkpoint(tmp_path)
