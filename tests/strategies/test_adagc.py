"""AdaGC: parity with pytorch-optimizer 4.1.0's AdaGC, and its per-tensor rule."""

from __future__ import annotations

import math
from importlib.metadata import version

import pytest
import torch

import gradclip

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

STEPS = 100
LR, BETAS = 1e-2, (0.9, 0.99)


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def spiky_batch(step):
    """Batch ``step``; every 13th input is 30 times larger, a gradient spike."""
    generator = torch.Generator().manual_seed(step)
    inputs, targets = torch.randn(32, 6, generator=generator), torch.randn(32, 3, generator=generator)
    return inputs * (30.0 if step % 13 == 7 else 1.0), targets


def backward(model, step):
    inputs, targets = spiky_batch(step)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(inputs), targets).backward()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.1])
@pytest.mark.parametrize("warmup_steps", [1, 10, 40])
def test_adagc_with_adamw_trains_like_pytorch_optimizer_4_1_0_adagc_over_100_spiky_steps(
    warmup_steps, weight_decay
):
    assert version("pytorch-optimizer") == "4.1.0"
    ours, theirs = make_model(), make_model()
    optimizer = torch.optim.AdamW(ours.parameters(), lr=LR, betas=BETAS, eps=1e-8,
                                  weight_decay=weight_decay)
    clipper = gradclip.AdaGC(warmup_steps=warmup_steps)
    reference = pytorch_optimizer.AdaGC(theirs.parameters(), lr=LR, betas=BETAS,
                                        weight_decay=weight_decay, warmup_steps=warmup_steps,
                                        eps=1e-8)
    clipped_after_warmup = 0
    for step in range(STEPS):
        backward(ours, step)
        backward(theirs, step)
        stats = clipper.clip_(ours.parameters())
        clipped_after_warmup += bool(stats.clipped) and step + 1 >= warmup_steps
        optimizer.step()
        reference.step()
    assert clipped_after_warmup > 0, "the relative rule never clipped: the check would prove nothing"
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def tensors(*grads):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return params


def test_warm_up_scales_every_gradient_by_the_global_norm_then_gamma_is_the_running_min():
    clipper = gradclip.AdaGC(lambda_abs=1.0, warmup_steps=3)
    params = tensors(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 12.0]))  # global norm 13
    stats = clipper.clip_(params)
    scale = 1.0 / (13.0 + 1e-8)
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0]) * scale)
    torch.testing.assert_close(stats.total_norm, torch.tensor(13.0))
    assert stats.threshold is None and stats.clipped
    torch.testing.assert_close(clipper.state["gamma"], torch.tensor([5.0, 12.0]) * scale)
    params = tensors(torch.tensor([0.3, 0.4]), torch.tensor([0.0, 0.01]))  # below lambda_abs
    clipper.clip_(params)
    torch.testing.assert_close(clipper.state["gamma"], torch.tensor([5 * scale, 0.01]))


def test_after_warm_up_each_tensor_is_limited_to_lambda_rel_times_its_gamma():
    clipper = gradclip.AdaGC(lambda_abs=10.0, lambda_rel=1.05, beta=0.5, warmup_steps=1)
    clipper.clip_(tensors(torch.tensor([0.6, 0.8]), torch.tensor([0.1, 0.0])))  # gamma 1, 0.1
    params = tensors(torch.tensor([6.0, 8.0]), torch.tensor([0.0, 0.05]))
    stats = clipper.clip_(params)
    torch.testing.assert_close(params[0].grad.norm(), torch.tensor(1.05))
    torch.testing.assert_close(params[1].grad, torch.tensor([0.0, 0.05]))  # h = 1: unchanged
    assert stats.clipped
    torch.testing.assert_close(clipper.state["gamma"], torch.tensor([(1 + 1.05) / 2, 0.075]))


def test_a_tensor_seen_for_the_first_time_after_warm_up_is_warmed_up():
    clipper = gradclip.AdaGC(warmup_steps=1)
    first = tensors(torch.tensor([0.6, 0.8]))
    clipper.clip_(first + [torch.nn.Parameter(torch.zeros(2))])  # the second has no grad yet
    assert clipper.state["seen"].tolist() == [True, False]
    params = [first[0], *tensors(torch.tensor([30.0, 40.0]))]
    params[0].grad = torch.tensor([0.6, 0.8])
    clipper.clip_(params)
    scale = 1.0 / (math.hypot(1.0, 50.0) + 1e-8)  # lambda_abs / global norm, for both
    torch.testing.assert_close(params[1].grad, torch.tensor([30.0, 40.0]) * scale)
    assert clipper.state["seen"].tolist() == [True, True]


def test_a_nonfinite_step_leaves_gamma_unchanged():
    clipper = gradclip.AdaGC(warmup_steps=1, nonfinite="skip")
    clipper.clip_(tensors(torch.tensor([0.6, 0.8])))
    before = {key: value.clone() for key, value in clipper.state.items()}
    params = tensors(torch.tensor([math.nan, 1.0]))
    stats = clipper.clip_(params)
    assert stats.skipped and torch.equal(params[0].grad, torch.zeros(2))
    assert torch.equal(clipper.state["gamma"], before["gamma"])
    assert clipper.state["step"] == before["step"] + 1


def test_the_parameter_list_may_grow_but_not_shrink():
    clipper = gradclip.AdaGC()
    clipper.clip_(tensors(torch.ones(2), torch.ones(3)))
    with pytest.raises(ValueError, match="one gamma per parameter: got 1 parameters, 2 before"):
        clipper.clip_(tensors(torch.ones(2)))


@pytest.mark.parametrize(
    ("keywords", "message"),
    [({"beta": 1.0}, "beta"), ({"lambda_abs": 0.0}, "lambda_abs"), ({"lambda_rel": -1.0}, "lambda_rel"),
     ({"warmup_steps": -1}, "warmup_steps"), ({"eps": -1e-8}, "eps")],
)
def test_bad_hyperparameters_are_refused_naming_them(keywords, message):
    with pytest.raises(ValueError, match=message):
        gradclip.AdaGC(**keywords)
