"""Clipping fused into torch's fused optimizer step equals clip-then-step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gradclip
from gradclip.fused import can_fuse, fused_clip_step, step_with_grad_scale, supports_fused_clip

OPTIMIZERS = {
    "Adam": lambda params, fused: torch.optim.Adam(params, lr=1e-2, fused=fused),
    "AdamW": lambda params, fused: torch.optim.AdamW(
        params, lr=1e-2, weight_decay=0.1, fused=fused
    ),
    "SGD-momentum": lambda params, fused: torch.optim.SGD(
        params, lr=1e-2, momentum=0.9, fused=fused
    ),
}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))


def backward(model: nn.Module, step: int) -> None:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(8, 5, generator=generator)
    scale = 50.0 if step % 2 else 0.01  # clipped on odd steps, untouched on even ones
    (model(x).square().mean() * scale).backward()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_clip_step_matches_clip_then_step_over_several_steps(name):
    reference, fused = make_model(), make_model()
    reference_optimizer = OPTIMIZERS[name](reference.parameters(), False)
    fused_optimizer = OPTIMIZERS[name](fused.parameters(), True)
    clipper = gradclip.NormClip(max_norm=1.0)
    for step in range(8):
        for model, optimizer in ((reference, reference_optimizer), (fused, fused_optimizer)):
            optimizer.zero_grad()
            backward(model, step)
        expected = clipper.clip_(reference.parameters())
        reference_optimizer.step()
        stats = fused_clip_step(fused_optimizer, clipper)
        torch.testing.assert_close(stats.total_norm, expected.total_norm)
        assert torch.equal(stats.clipped, expected.clipped)
        for p, q in zip(reference.parameters(), fused.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)


def test_fused_clip_step_on_flat_buffers_matches_clip_then_step():
    reference, fused = make_model(), make_model()
    gradclip.flatten_grads_(fused)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    fused_optimizer = torch.optim.Adam(fused.parameters(), lr=1e-2, fused=True)
    clipper = gradclip.NormClip(max_norm=0.5)
    for step in range(4):
        for model, optimizer in ((reference, reference_optimizer), (fused, fused_optimizer)):
            optimizer.zero_grad()
            backward(model, step)
        clipper.clip_(reference.parameters())
        reference_optimizer.step()
        fused_clip_step(fused_optimizer, clipper)
    for p, q in zip(reference.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_skip_policy_skips_the_fused_step_on_a_non_finite_norm_and_keeps_the_step_count():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    clipper = gradclip.NormClip(max_norm=1.0, nonfinite="skip")
    backward(model, 1)
    fused_clip_step(optimizer, clipper)
    weights = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    backward(model, 2)
    model[0].weight.grad[0, 0] = float("nan")
    stats = fused_clip_step(optimizer, clipper)
    assert bool(stats.skipped)
    for p, before in zip(model.parameters(), weights, strict=True):
        assert torch.equal(p, before)
    assert all(int(optimizer.state[p]["step"]) == 1 for p in model.parameters())


def test_amp_grad_scale_already_on_the_optimizer_is_combined_and_restored():
    model = make_model()
    reference = copy.deepcopy(model)
    backward(model, 1)
    backward(reference, 1)
    for p in model.parameters():
        p.grad.mul_(4.0)  # gradients as GradScaler leaves them: still scaled by 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    amp_scale, amp_found_inf = torch.tensor(4.0), torch.tensor(0.0)
    optimizer.grad_scale, optimizer.found_inf = amp_scale, amp_found_inf
    step_with_grad_scale(optimizer, torch.tensor(2.0))  # clip: halve the true gradient
    for p, q in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad / 2.0)
        torch.testing.assert_close(q, p - 0.1 * p.grad / 2.0)
    assert optimizer.grad_scale is amp_scale and optimizer.found_inf is amp_found_inf


def test_unfused_optimizer_or_other_strategy_is_not_fused():
    params = list(make_model().parameters())
    assert not supports_fused_clip(torch.optim.Adam(params, lr=1e-3))
    assert not supports_fused_clip(torch.optim.Adam(params, lr=1e-3, foreach=True))
    assert supports_fused_clip(torch.optim.Adam(params, lr=1e-3, fused=True))
    fused = torch.optim.Adam(params, lr=1e-3, fused=True)
    assert not can_fuse(fused, gradclip.ValueClip(0.1))
    assert not can_fuse(fused, gradclip.NormClip(1.0, nonfinite="error"))
    assert can_fuse(fused, gradclip.NormClip(1.0))


def test_clipped_optimizer_with_a_fused_optimizer_matches_the_unfused_one():
    reference, fused = make_model(), make_model()
    optimizers = [
        gradclip.ClippedOptimizer(torch.optim.AdamW(reference.parameters(), lr=1e-2), "norm:1.0"),
        gradclip.ClippedOptimizer(
            torch.optim.AdamW(fused.parameters(), lr=1e-2, fused=True), "norm:1.0"
        ),
    ]
    for step in range(5):
        for model, optimizer in zip((reference, fused), optimizers, strict=True):
            optimizer.zero_grad()
            backward(model, step)
            optimizer.step()
        torch.testing.assert_close(optimizers[1].last_stats.total_norm,
                                   optimizers[0].last_stats.total_norm)
    for p, q in zip(reference.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_clipped_optimizer_counts_a_step_skipped_inside_the_fused_kernel():
    model = make_model()
    clipper = gradclip.NormClip(1.0, nonfinite="skip")
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.Adam(model.parameters(), lr=1e-2, fused=True), clipper
    )
    backward(model, 1)
    model[0].bias.grad[0] = float("inf")
    weights = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert optimizer.skipped_steps == 1
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
