"""Laws of clipping by norm: bounded, direction kept, no-op below the threshold, idempotent."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradclip

shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=5)


def params_for(shape_list, seed, scale, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shape_list:
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
        params.append(p)
    return params


def flat(params):
    return torch.cat([p.grad.double().flatten() for p in params])


law_cases = given(
    shape_list=shapes,
    seed=st.integers(0, 2**16),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.floats(1e-2, 1e2),
    norm_type=st.sampled_from([1.0, 2.0, 3.0, math.inf]),
)


@settings(max_examples=80, deadline=None)
@law_cases
def test_norm_after_clip_never_exceeds_max_norm(shape_list, seed, scale, max_norm, norm_type):
    params = params_for(shape_list, seed, scale)
    gradclip.clip_grad_norm_(params, max_norm, norm_type)
    after = gradclip.get_total_norm([p.grad for p in params], norm_type)
    assert after <= max_norm * (1 + 1e-5)


@settings(max_examples=80, deadline=None)
@law_cases
def test_clipping_keeps_the_gradient_direction(shape_list, seed, scale, max_norm, norm_type):
    params = params_for(shape_list, seed, scale)
    before = flat(params)
    gradclip.clip_grad_norm_(params, max_norm, norm_type)
    cosine = torch.nn.functional.cosine_similarity(before, flat(params), dim=0)
    assert cosine > 1 - 1e-6


@settings(max_examples=80, deadline=None)
@law_cases
def test_clipping_is_a_no_op_below_the_threshold(shape_list, seed, scale, max_norm, norm_type):
    params = params_for(shape_list, seed, scale)
    norm = gradclip.get_total_norm([p.grad for p in params], norm_type)
    before = [p.grad.clone() for p in params]
    gradclip.clip_grad_norm_(params, float(norm) * 2 + 1e-3, norm_type)
    for p, grad in zip(params, before, strict=True):
        assert torch.equal(p.grad, grad)


@settings(max_examples=80, deadline=None)
@law_cases
def test_clipping_twice_changes_nothing_more(shape_list, seed, scale, max_norm, norm_type):
    params = params_for(shape_list, seed, scale, torch.float64)
    gradclip.clip_grad_norm_(params, max_norm, norm_type)
    once = flat(params)
    gradclip.clip_grad_norm_(params, max_norm, norm_type)
    # torch's 1e-6 in max_norm / (norm + 1e-6) leaves at most that relative slack per pass.
    torch.testing.assert_close(flat(params), once, rtol=1.01e-6 / max_norm, atol=0)


@settings(max_examples=60, deadline=None)
@given(shape_list=shapes, seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-2, 1e2))
def test_per_tensor_clip_bounds_each_gradient_by_its_own_norm(shape_list, seed, scale, max_norm):
    params = params_for(shape_list, seed, scale)
    before = [p.grad.clone() for p in params]
    norms = gradclip.clip_grad_norm_per_tensor_(params, max_norm)
    for p, grad, norm in zip(params, before, norms, strict=True):
        torch.testing.assert_close(norm, grad.norm())
        assert p.grad.norm() <= max_norm * (1 + 1e-5)
        reference = torch.nn.Parameter(torch.zeros_like(grad))
        reference.grad = grad.clone()
        torch.nn.utils.clip_grad_norm_(reference, max_norm)
        torch.testing.assert_close(p.grad, reference.grad, rtol=1e-6, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shape_list=shapes, seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), clip_value=st.floats(0, 10))
def test_value_clip_bounds_every_element(shape_list, seed, scale, clip_value):
    params = params_for(shape_list, seed, scale)
    gradclip.clip_grad_value_(params, clip_value)
    assert all(p.grad.abs().max() <= clip_value for p in params)


def test_per_tensor_clip_returns_norms_in_parameter_order_across_dtypes():
    params = (
        params_for([(3,)], 0, 1.0)
        + params_for([(2, 2)], 2, 1.0, torch.float16)
        + params_for([(5,)], 1, 1.0, torch.float64)
    )
    expected = torch.stack([p.grad.double().norm() for p in params])
    norms = gradclip.clip_grad_norm_per_tensor_(params, 100.0)
    torch.testing.assert_close(norms.double(), expected, rtol=1e-3, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, "inf"])
def test_per_tensor_clip_handles_empty_gradients(norm_type):
    params = params_for([(3,), (2, 2)], 0, 10.0)
    empty = torch.nn.Parameter(torch.zeros(0))
    empty.grad = torch.zeros(0)
    norms = gradclip.clip_grad_norm_per_tensor_([params[0], empty, params[1]], 1.0, norm_type)
    assert norms[1] == 0 and norms.shape == (3,)
