"""Parameter groups: optimizer-style dicts with per-group hyper-parameters."""

from __future__ import annotations

import pytest
import torch

import gradclip


def params_with_grads(*grads):
    params = []
    for grad in grads:
        p = torch.nn.Parameter(torch.zeros(len(grad)))
        p.grad = torch.tensor(grad)
        params.append(p)
    return params


def test_norm_clip_clips_each_group_by_its_own_norm_and_limit():
    a, b, c = params_with_grads([3.0, 4.0], [6.0, 8.0], [30.0, 40.0])
    stats = gradclip.NormClip(1.0).clip_([
        {"params": [a]},
        {"params": [b], "max_norm": 5.0},
        {"params": [c], "max_norm": None},
    ])
    torch.testing.assert_close(a.grad.norm(), torch.tensor(1.0))
    torch.testing.assert_close(b.grad.norm(), torch.tensor(5.0))
    assert torch.equal(c.grad, torch.tensor([30.0, 40.0]))
    torch.testing.assert_close(stats.total_norm, torch.tensor([3.0, 4, 6, 8, 30, 40]).norm())
    assert stats.clipped and stats.threshold == 1.0


def test_groups_without_overrides_are_one_global_clip_as_torch_does():
    ours = params_with_grads([3.0, 4.0], [6.0, 8.0])
    theirs = params_with_grads([3.0, 4.0], [6.0, 8.0])
    optimizer = torch.optim.SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.5}], lr=0.1)
    stats = gradclip.NormClip(2.0).clip_(optimizer.param_groups)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 2.0)
    assert torch.equal(stats.total_norm, expected)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p.grad, q.grad)


def test_value_clip_groups_override_the_range():
    a, b = params_with_grads([-5.0, 5.0], [-5.0, 5.0])
    gradclip.ValueClip(1.0).clip_([{"params": [a]}, {"params": [b], "clip_value": None, "max": 2.0}])
    assert torch.equal(a.grad, torch.tensor([-1.0, 1.0]))
    assert torch.equal(b.grad, torch.tensor([-5.0, 2.0]))


def test_adaptive_strategies_refuse_per_group_thresholds_they_cannot_honour():
    (a,) = params_with_grads([1.0])
    with pytest.raises(ValueError, match="quantile"):
        gradclip.AutoClip().clip_([{"params": [a], "quantile": 0.5}])
    with pytest.raises(ValueError, match="z_thresh"):
        gradclip.ZClip().clip_([{"params": [a], "z_thresh": 1.0}])


def test_a_group_without_params_is_a_type_error_naming_it():
    (a,) = params_with_grads([1.0])
    with pytest.raises(TypeError, match=r"param_groups\[1\]"):
        gradclip.NormClip(1.0).clip_([{"params": [a]}, {"lr": 0.1}])


def test_named_parameters_inside_a_group_name_the_parameter_in_errors():
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    model.bias.grad[0] = float("nan")
    with pytest.raises(RuntimeError, match="bias"):
        gradclip.NormClip(1.0, nonfinite="error").clip_([{"params": model.named_parameters()}])


def test_optimizer_param_groups_eps_is_not_taken_for_the_strategy_eps():
    ours = params_with_grads([3.0, 4.0])
    theirs = params_with_grads([3.0, 4.0])
    for p in ours + theirs:
        p.data.zero_()  # zero weights: max(||W||, eps) is eps, so eps decides the limit
    adam = torch.optim.Adam(ours, eps=1e-8)
    gradclip.AGC(0.01).clip_(adam.param_groups)
    gradclip.AGC(0.01).clip_(theirs)
    assert torch.equal(ours[0].grad, theirs[0].grad)
    gradclip.ZClip().clip_(adam.param_groups)  # Adam's eps is no per-group ZClip override
