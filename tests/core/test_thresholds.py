"""Thresholds: tensor max_norm under every policy, 1-element tensors, limits beyond float32."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip
from tests.contracts.sync_guard import forbid_host_sync
from tests.core.torch_parity import assert_grads_equal, clone_params, make_params

BAD_TENSOR_THRESHOLDS = [math.nan, -1.0, math.inf, -math.inf, 0.0]


def params():
    return make_params([(3, 4), (5,)], [torch.float32, torch.float32], seed=0, scale=3.0)


@pytest.mark.parametrize("max_norm", BAD_TENSOR_THRESHOLDS)
def test_skip_covers_a_bad_tensor_max_norm_zeroing_grads_without_a_host_sync(max_norm):
    ps = params()
    with forbid_host_sync():
        norm = gradclip.clip_grad_norm_(ps, torch.tensor(max_norm), nonfinite="skip")
    assert torch.isnan(norm), "a non-finite returned norm is the sign of a skipped step"
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in ps)


@pytest.mark.parametrize("max_norm", BAD_TENSOR_THRESHOLDS)
def test_skip_covers_a_bad_tensor_max_norm_per_tensor_too(max_norm):
    ps = params()
    norms = gradclip.clip_grad_norm_per_tensor_(ps, torch.tensor(max_norm), nonfinite="skip")
    assert torch.isnan(norms).all()
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in ps)


@pytest.mark.parametrize("max_norm", BAD_TENSOR_THRESHOLDS)
def test_error_policy_refuses_a_bad_tensor_max_norm_and_leaves_grads(max_norm):
    ps = params()
    before = clone_params(ps)
    with pytest.raises(ValueError, match="max_norm must be a positive finite number"):
        gradclip.clip_grad_norm_(ps, torch.tensor(max_norm), nonfinite="error")
    assert_grads_equal(ps, before)


@pytest.mark.parametrize("max_norm", BAD_TENSOR_THRESHOLDS)
def test_propagate_does_what_torch_does_with_a_bad_tensor_max_norm(max_norm):
    # torch multiplies by the coefficient as it is: a negative threshold flips the signs.
    ours = params()
    theirs = clone_params(ours)
    gradclip.clip_grad_norm_(ours, torch.tensor(max_norm))
    torch.nn.utils.clip_grad_norm_(theirs, torch.tensor(max_norm))
    assert_grads_equal(ours, theirs)


def test_a_finite_tensor_max_norm_never_skips():
    ps = params()
    norm = gradclip.clip_grad_norm_(ps, torch.tensor(0.5), nonfinite="skip")
    assert torch.isfinite(norm)
    torch.testing.assert_close(gradclip.get_total_norm([p.grad for p in ps]), torch.tensor(0.5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad_dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_a_tensor_max_norm_matches_torch_bit_for_bit(dtype, grad_dtype):
    for seed in range(20):
        ours = make_params([(7,), (2, 3)], [grad_dtype, grad_dtype], seed=seed, scale=3.0)
        theirs = clone_params(ours)
        max_norm = torch.rand((), generator=torch.Generator().manual_seed(seed)).to(dtype) * 2
        assert torch.equal(gradclip.clip_grad_norm_(ours, max_norm),
                           torch.nn.utils.clip_grad_norm_(theirs, max_norm))
        assert_grads_equal(ours, theirs)


@pytest.mark.parametrize("max_norm", [torch.tensor([0.5]), torch.tensor([[0.5]])])
def test_a_one_element_tensor_max_norm_works_as_in_torch(max_norm):
    ours = params()
    theirs = clone_params(ours)
    assert torch.equal(gradclip.clip_grad_norm_(ours, max_norm),
                       torch.nn.utils.clip_grad_norm_(theirs, max_norm))
    assert_grads_equal(ours, theirs)
    gradclip.clip_grads_with_norm_(ours, max_norm, torch.tensor(3.0))
    torch.nn.utils.clip_grads_with_norm_(theirs, max_norm, torch.tensor(3.0))
    assert_grads_equal(ours, theirs)


def test_a_limit_beyond_float32_works_like_torch_clip_grad_norm():
    ours = params()
    theirs = clone_params(ours)
    assert torch.equal(gradclip.clip_grad_norm_(ours, 1e39),
                       torch.nn.utils.clip_grad_norm_(theirs, 1e39))
    assert_grads_equal(ours, theirs)


@pytest.mark.parametrize(
    "clip",
    [
        lambda ps: gradclip.clip_grad_value_(ps, 1e39),
        lambda ps: gradclip.clip_grad_norm_per_tensor_(ps, 1e39),
        lambda ps: gradclip.adaptive_clip_grad_(ps, 1e39),
        lambda ps: gradclip.NormClip(1e39).clip_(ps),
        lambda ps: gradclip.ValueClip(1e39).clip_(ps),
        lambda ps: gradclip.ValueClip(min=-1e39, max=1e39).clip_(ps),
        lambda ps: gradclip.AGC(1e39).clip_(ps),
        lambda ps: gradclip.ZClip(max_grad_norm=1e39, warmup_steps=1).clip_(ps),
    ],
    ids=["clip_grad_value_", "per_tensor", "adaptive_clip_grad_", "NormClip", "ValueClip",
         "ValueClip min/max", "AGC", "ZClip"],
)
def test_limits_beyond_float32_leave_gradients_alone(clip):
    ps = params()
    before = clone_params(ps)
    clip(ps)
    assert_grads_equal(ps, before)


def test_strategy_thresholds_beyond_float32_are_reported_as_inf():
    for clipper in (gradclip.NormClip(1e39), gradclip.ValueClip(1e39)):
        assert clipper.clip_(params()).threshold == math.inf


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_a_clamp_bound_beyond_the_dtype_sends_inf_where_it_rounds_to(dtype):
    info = torch.finfo(dtype)
    param = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    for bound, expected in ((info.max * (1 + info.eps / 8), info.max), (1e39, math.inf)):
        param.grad = torch.tensor([1.0, math.inf, -math.inf], dtype=dtype)
        gradclip.clip_grad_value_(param, bound)
        want = torch.tensor([1.0, expected, -expected], dtype=torch.float64).to(dtype)
        assert torch.equal(param.grad, want)
