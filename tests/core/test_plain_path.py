"""The plain path of the drop-in ops: a list, tuple or generator of ordinary parameters takes
torch's work and no more (no names, no per-tensor type checks), and gives torch's bits."""

from __future__ import annotations

import pytest
import torch

import gradclip
import gradclip.flat
import gradclip.functional as functional
from tests.core.torch_parity import assert_grads_equal, clone_params, make_params

SHAPES = [(3, 4), (5,), (0,), (2, 2, 2), (7,)]
DTYPES = [torch.float32, torch.float64, torch.float32, torch.float32, torch.float64]


@pytest.fixture
def no_names(monkeypatch):
    """Fail if the call builds parameter names (the general path)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the plain path built parameter names")

    monkeypatch.setattr(functional, "named_tensors", refuse)
    monkeypatch.setattr(functional, "named_grads", refuse)


@pytest.mark.parametrize("container", [list, tuple, iter])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 0.0, -1.5])
def test_plain_norm_clip_builds_no_names_and_matches_torch_bit_for_bit(no_names, container, norm_type):
    ours = make_params(SHAPES, DTYPES, seed=3, scale=5.0)
    theirs = clone_params(ours)
    norm = gradclip.clip_grad_norm_(container(ours), 1.0, norm_type)
    # torch fails on the empty gradient for inf and p < 0; ours ignores it (torch's answer
    # on the others)
    nonempty = [p for p in theirs if p.numel()] if norm_type in (float("inf"), -1.5) else theirs
    expected = torch.nn.utils.clip_grad_norm_(nonempty, 1.0, norm_type)
    assert torch.equal(norm, expected) or (norm.isnan() and expected.isnan())
    assert_grads_equal(ours, theirs)


def test_plain_norm_clip_of_a_generator_matches_torch(no_names):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    twin.load_state_dict(model.state_dict())
    for m in (model, twin):
        m(torch.ones(2, 4)).square().sum().mul(100).backward()
    norm = gradclip.clip_grad_norm_(model.parameters(), 0.5)
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    assert torch.equal(norm, expected)
    assert_grads_equal(list(model.parameters()), list(twin.parameters()))


@pytest.mark.parametrize("container", [list, tuple, iter])
def test_plain_value_clip_builds_no_names_and_matches_torch_bit_for_bit(no_names, container):
    ours = make_params(SHAPES, DTYPES, seed=4)
    theirs = clone_params(ours)
    gradclip.clip_grad_value_(container(ours), 0.3)
    torch.nn.utils.clip_grad_value_([p for p in theirs if p.numel()], 0.3)
    assert_grads_equal(ours, theirs)


def test_plain_get_total_norm_builds_no_names(no_names):
    grads = [p.grad for p in make_params(SHAPES, DTYPES, seed=5)]
    assert torch.equal(gradclip.get_total_norm(grads), torch.nn.utils.get_total_norm(grads))


def test_plain_skip_policy_zeroes_a_nonfinite_step(no_names):
    params = make_params(SHAPES, DTYPES, seed=6)
    params[1].grad[0] = float("nan")
    norm = gradclip.clip_grad_norm_(params, 1.0, nonfinite="skip")
    assert norm.isnan()
    assert all(not p.grad.any() for p in params)


def test_plain_error_if_nonfinite_raises_like_torch(no_names):
    params = make_params(SHAPES, DTYPES, seed=7)
    params[0].grad[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite"):
        gradclip.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)


def test_named_pairs_and_the_error_policy_still_name_the_parameter():
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    model.bias.grad[0] = float("nan")
    with pytest.raises(RuntimeError, match="'bias'"):
        gradclip.clip_grad_norm_(model.named_parameters(), 1.0, nonfinite="error")
    with pytest.raises(RuntimeError, match=r"parameters\[1\]"):
        gradclip.clip_grad_norm_(list(model.parameters()), 1.0, nonfinite="error")


def test_tensor_subclass_parameters_take_the_general_path():
    class Tagged(torch.Tensor):
        pass

    ours = [torch.randn(3).as_subclass(Tagged).requires_grad_() for _ in range(2)]
    theirs = [t.detach().clone().as_subclass(Tagged).requires_grad_() for t in ours]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn(3)
        q.grad = p.grad.clone()
    assert gradclip.flat.plain_or_flat_grads(ours) == (None, None)
    norm = gradclip.clip_grad_norm_(ours, 0.1)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(theirs, 0.1))
    assert_grads_equal(ours, theirs)


def test_flat_views_still_take_the_flat_path():
    ours = make_params([(4,), (6,)], [torch.float32] * 2, seed=8, scale=3.0)
    theirs = clone_params(ours)
    [flat] = gradclip.flatten_grads_(ours)
    try:
        norm = gradclip.clip_grad_norm_(ours, 1.0)
        assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(theirs, 1.0))
        assert_grads_equal(ours, theirs)
        assert all(p.grad is view for p, view in zip(ours, flat.views, strict=True))
    finally:
        flat.remove()
