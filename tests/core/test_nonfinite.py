"""The non-finite policies: error names the parameter, skip zeroes, propagate is torch's."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip

NORM_OPS = {
    "clip_grad_norm_": lambda params, **kw: gradclip.clip_grad_norm_(params, 1.0, **kw),
    "clip_grad_norm_per_tensor_": lambda params, **kw: gradclip.clip_grad_norm_per_tensor_(params, 1.0, **kw),
    "adaptive_clip_grad_": lambda params, **kw: gradclip.adaptive_clip_grad_(params, 0.01, **kw),
}


def model_with_bad_gradient(value=math.nan):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model(torch.randn(5, 3)).pow(2).sum().backward()
    model[2].weight.grad[1, 1] = value
    return model


@pytest.mark.parametrize("op", NORM_OPS.values(), ids=NORM_OPS.keys())
def test_error_policy_names_the_first_parameter_with_nan_by_module_path(op):
    model = model_with_bad_gradient()
    with pytest.raises(RuntimeError, match=r"gradient of '2\.weight' holds NaN \(1 of 8 elements\)"):
        op(model.named_parameters(), nonfinite="error")


def test_error_policy_names_inf_and_leaves_gradients_untouched():
    model = model_with_bad_gradient(math.inf)
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"'2\.weight' holds Inf"):
        gradclip.clip_grad_norm_(model.named_parameters(), 1.0, nonfinite="error")
    for p, grad in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, grad)


def test_error_policy_names_plain_parameters_by_position():
    model = model_with_bad_gradient()
    with pytest.raises(RuntimeError, match=r"'parameters\[2\]'"):
        gradclip.clip_grad_norm_(list(model.parameters()), 1.0, nonfinite="error")


def test_error_policy_explains_an_overflowing_norm_of_finite_gradients():
    grad = torch.full((4,), 60000.0, dtype=torch.float16)
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))
    param.grad = grad
    with pytest.raises(RuntimeError, match="norm itself overflowed"):
        gradclip.clip_grad_norm_(param, 1.0, nonfinite="error")


def test_error_policy_is_silent_on_finite_gradients():
    model = model_with_bad_gradient(0.5)
    gradclip.clip_grad_norm_(model.named_parameters(), 1.0, nonfinite="error")


@pytest.mark.parametrize("op", NORM_OPS.values(), ids=NORM_OPS.keys())
def test_skip_policy_zeroes_every_gradient_and_reports_the_nonfinite_norm(op):
    model = model_with_bad_gradient()
    norm = op(model.named_parameters(), nonfinite="skip")
    assert not torch.isfinite(norm).all()
    for p in model.parameters():
        assert torch.equal(p.grad, torch.zeros_like(p.grad))


def test_skip_policy_on_finite_gradients_is_bit_identical_to_torch():
    model = model_with_bad_gradient(0.5)
    reference = [p.grad.clone() for p in model.parameters()]
    norm = gradclip.clip_grad_norm_(model.parameters(), 0.1, nonfinite="skip")
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in reference]
    for p, g in zip(params, reference, strict=True):
        p.grad = g
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(params, 0.1))
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p.grad, q.grad)


def test_propagate_policy_is_torchs_behaviour():
    model = model_with_bad_gradient()
    norm = gradclip.clip_grad_norm_(model.parameters(), 1.0, nonfinite="propagate")
    assert torch.isnan(norm)
    assert all(torch.isnan(p.grad).all() for p in model.parameters())


def test_default_policy_is_propagate():
    model = model_with_bad_gradient()
    gradclip.clip_grad_norm_(model.parameters(), 1.0)
    assert all(torch.isnan(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("op", NORM_OPS.values(), ids=NORM_OPS.keys())
def test_unknown_policy_is_a_value_error_listing_the_policies(op):
    model = model_with_bad_gradient(0.5)
    with pytest.raises(ValueError, match="nonfinite must be one of 'error', 'skip', 'propagate'"):
        op(model.parameters(), nonfinite="ignore")
