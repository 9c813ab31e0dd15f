"""Parity with torch.nn.utils (torch 2.13): returned norm and every gradient, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradclip
from tests.core.torch_parity import assert_grads_equal, clone_params, make_params

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Every p torch accepts: 0 counts non-zeros, negative p and -inf as torch.linalg.vector_norm.
NORM_TYPES = [0.5, 1.0, 1.5, 2.0, 3.0, math.inf, 0.0, -0.5, -1.0, -2.0, -math.inf]


shape_strategy = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
case_strategy = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.lists(shape_strategy, min_size=n, max_size=n),
        st.lists(st.sampled_from(DTYPES), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(
    case=case_strategy,
    norm_type=st.sampled_from(NORM_TYPES),
    max_norm=st.floats(1e-3, 10.0),
    foreach=st.sampled_from([None, True, False]),
    scale=st.sampled_from([1e-3, 1.0, 100.0]),
    seed=st.integers(0, 2**16),
)
def test_clip_grad_norm_matches_torch_bit_for_bit(case, norm_type, max_norm, foreach, scale, seed):
    shapes, dtypes, has_grad = case
    ours = make_params(shapes, dtypes, seed, scale, has_grad)
    theirs = clone_params(ours)
    our_norm = gradclip.clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    assert our_norm.dtype == their_norm.dtype
    assert torch.equal(our_norm, their_norm)
    assert_grads_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(
    case=case_strategy,
    norm_type=st.sampled_from(NORM_TYPES),
    foreach=st.sampled_from([None, True, False]),
    seed=st.integers(0, 2**16),
)
def test_get_total_norm_matches_torch_bit_for_bit(case, norm_type, foreach, seed):
    shapes, dtypes, has_grad = case
    grads = [p.grad for p in make_params(shapes, dtypes, seed, with_grad=has_grad) if p.grad is not None]
    ours = gradclip.get_total_norm(grads, norm_type, foreach=foreach)
    theirs = torch.nn.utils.get_total_norm(grads, norm_type, foreach=foreach)
    assert ours.dtype == theirs.dtype and ours.device == theirs.device
    assert torch.equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(
    case=case_strategy,
    max_norm=st.floats(1e-3, 10.0),
    total_norm=st.floats(0.0, 100.0),
    foreach=st.sampled_from([None, True, False]),
    seed=st.integers(0, 2**16),
)
def test_clip_grads_with_norm_matches_torch_bit_for_bit(case, max_norm, total_norm, foreach, seed):
    shapes, dtypes, has_grad = case
    ours = make_params(shapes, dtypes, seed, with_grad=has_grad)
    theirs = clone_params(ours)
    norm = torch.tensor(total_norm)
    assert gradclip.clip_grads_with_norm_(ours, max_norm, norm, foreach=foreach) is None
    torch.nn.utils.clip_grads_with_norm_(theirs, max_norm, norm, foreach=foreach)
    assert_grads_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(
    case=case_strategy,
    clip_value=st.floats(0.0, 3.0),
    foreach=st.sampled_from([None, True, False]),
    seed=st.integers(0, 2**16),
)
def test_clip_grad_value_matches_torch_bit_for_bit(case, clip_value, foreach, seed):
    shapes, dtypes, has_grad = case
    ours = make_params(shapes, dtypes, seed, with_grad=has_grad)
    theirs = clone_params(ours)
    assert gradclip.clip_grad_value_(ours, clip_value, foreach=foreach) is None
    if any(has_grad):  # torch's grouping fails on an empty gradient list; ours is a no-op
        torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=foreach)
    assert_grads_equal(ours, theirs)


@pytest.mark.parametrize("norm_type", [2.0, math.inf, "inf", 1.0])
def test_single_tensor_is_accepted_like_torch(norm_type):
    (ours,) = make_params([(4, 3)], [torch.float32], seed=1, scale=10.0)
    (theirs,) = clone_params([ours])
    assert torch.equal(
        gradclip.clip_grad_norm_(ours, 1.0, norm_type),
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, float(norm_type)),
    )
    assert torch.equal(ours.grad, theirs.grad)


def test_generator_of_parameters_is_consumed_once_like_torch():
    model = torch.nn.Linear(3, 2)
    model(torch.randn(5, 3)).pow(2).sum().backward()
    reference = clone_params(list(model.parameters()))
    norm = gradclip.clip_grad_norm_(model.parameters(), 0.1)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(reference, 0.1))
    assert_grads_equal(list(model.parameters()), reference)


def test_empty_iterable_gives_zero_norm_like_torch():
    assert torch.equal(gradclip.clip_grad_norm_([], 1.0), torch.nn.utils.clip_grad_norm_([], 1.0))
    assert torch.equal(gradclip.get_total_norm([]), torch.nn.utils.get_total_norm([]))


def test_empty_generator_warns_like_torch():
    with pytest.warns(UserWarning, match="empty generator"):
        gradclip.clip_grad_norm_((p for p in []), 1.0)


def test_parameters_without_grad_are_skipped():
    params = make_params([(3,), (2, 2), (5,)], [torch.float32] * 3, seed=3, with_grad=[True, False, True])
    reference = clone_params(params)
    assert torch.equal(gradclip.clip_grad_norm_(params, 0.5), torch.nn.utils.clip_grad_norm_(reference, 0.5))
    assert params[1].grad is None
    assert_grads_equal(params, reference)


def test_named_parameters_give_the_same_result_as_plain_parameters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model(torch.randn(6, 4)).pow(2).sum().backward()
    reference = clone_params(list(model.parameters()))
    norm = gradclip.clip_grad_norm_(model.named_parameters(), 0.1)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(reference, 0.1))
    assert_grads_equal(list(model.parameters()), reference)


def test_inf_norm_ignores_zero_element_gradients_where_torch_fails():
    params = make_params([(0,), (3, 2), (0, 4), (5,)], [torch.float32] * 4, seed=4, scale=5.0)
    with pytest.raises(RuntimeError, match="empty tensor"):
        torch.nn.utils.clip_grad_norm_(clone_params(params), 1.0, math.inf, foreach=True)
    nonempty_reference = [p for p in clone_params(params) if p.numel() > 0]
    norm = gradclip.clip_grad_norm_(params, 1.0, math.inf, foreach=True)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(nonempty_reference, 1.0, math.inf, foreach=True))
    assert_grads_equal([p for p in params if p.numel() > 0], nonempty_reference)


def test_inf_norm_of_only_empty_gradients_is_zero():
    params = make_params([(0,), (0, 3)], [torch.float32] * 2, seed=5)
    assert torch.equal(gradclip.get_total_norm([p.grad for p in params], "inf"), torch.tensor(0.0))


def test_value_clip_with_foreach_skips_an_empty_first_gradient():
    params = make_params([(0,), (4, 4)], [torch.float32] * 2, seed=6, scale=3.0)
    reference = clone_params(params)[1:]
    gradclip.clip_grad_value_(params, 0.5, foreach=True)
    torch.nn.utils.clip_grad_value_(reference, 0.5, foreach=True)
    assert_grads_equal(params[1:], reference)


def test_error_if_nonfinite_raises_like_torch():
    (param,) = make_params([(3,)], [torch.float32], seed=7)
    param.grad[0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        gradclip.clip_grad_norm_(param, 1.0, error_if_nonfinite=True)


def test_foreach_true_on_an_unsupported_device_raises_like_torch():
    grads = [torch.ones(2, device="meta")]
    with pytest.raises(RuntimeError, match="foreach=True"):
        gradclip.get_total_norm(grads, foreach=True)
