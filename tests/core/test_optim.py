"""ClippedOptimizer: clip then step, skip the step on a non-finite gradient under "skip"."""

from __future__ import annotations

import io
import math

import pytest
import torch

import gradclip
from tests.contracts.sync_guard import forbid_host_sync


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def batch(step):
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(16, 3, generator=generator)
    return x, (x.sum(1, keepdim=True) * 5).sin()


def loss_of(model, step):
    x, y = batch(step)
    return torch.nn.functional.mse_loss(model(x), y) * 100


def test_step_clips_then_steps_exactly_like_the_manual_loop():
    ours, theirs = make_model(), make_model()
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9), gradclip.NormClip(0.5)
    )
    reference = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    for step in range(20):
        optimizer.zero_grad()
        loss_of(ours, step).backward()
        optimizer.step()
        reference.zero_grad()
        loss_of(theirs, step).backward()
        expected_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        reference.step()
        assert torch.equal(optimizer.last_stats.total_norm, expected_norm)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    assert optimizer.skipped_steps == 0


def test_step_with_a_closure_returns_its_loss_and_clips():
    model = make_model()
    optimizer = gradclip.ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), gradclip.NormClip(1e-3))

    def closure():
        optimizer.zero_grad()
        loss = loss_of(model, 0)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.requires_grad and optimizer.last_stats.clipped


def test_skip_policy_skips_the_optimizer_step_on_nan_and_counts_it():
    model = make_model()
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.Adam(model.parameters(), lr=0.01), gradclip.ZClip(warmup_steps=2, nonfinite="skip")
    )
    for step in range(6):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        if step == 4:
            model[0].weight.grad[0, 0] = math.nan
            before = [p.detach().clone() for p in model.parameters()]
            adam_steps = [optimizer.state[p]["step"].clone() for p in model.parameters()]
        optimizer.step()
        if step == 4:
            assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
            assert all(
                torch.equal(optimizer.state[p]["step"], s)
                for p, s in zip(model.parameters(), adam_steps, strict=True)
            )
            assert optimizer.last_stats.skipped
    assert optimizer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_step_does_not_synchronise_outside_the_skip_policy():
    model = make_model()
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), gradclip.AutoClip(0.5)
    )
    for step in range(4):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        with forbid_host_sync():
            optimizer.step()


def test_state_dict_round_trips_optimizer_clipper_and_skip_count():
    model = make_model()
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.Adam(model.parameters(), lr=0.01), gradclip.AutoClip(0.3, nonfinite="skip")
    )
    for step in range(5):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        optimizer.step()
    optimizer.skipped_steps = 2
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = gradclip.ClippedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), gradclip.AutoClip(0.3))
    restored.load_state_dict(state)
    assert restored.skipped_steps == 2
    assert torch.equal(restored.clipper.threshold(), optimizer.clipper.threshold())
    assert restored.state_dict()["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]


def test_param_groups_zero_grad_and_lr_schedulers_reach_the_wrapped_optimizer():
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer = gradclip.ClippedOptimizer(inner, gradclip.NoClip())
    assert optimizer.param_groups is inner.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss_of(model, 0).backward()
    optimizer.step()
    scheduler.step()
    assert inner.param_groups[0]["lr"] == 0.5
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_clipped_optimizer_takes_a_spec_string_and_rejects_other_objects():
    inner = torch.optim.SGD(make_model().parameters(), lr=0.1)
    assert isinstance(gradclip.ClippedOptimizer(inner, "norm:1.0").clipper, gradclip.NormClip)
    with pytest.raises(TypeError, match="Clipper"):
        gradclip.ClippedOptimizer(inner, 1.0)


def test_clipped_optimizer_survives_deepcopy_and_pickle():
    import copy
    import pickle

    model = make_model()
    optimizer = gradclip.ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), "autoclip:0.5")
    loss_of(model, 0).backward()
    optimizer.step()
    for clone in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert isinstance(clone.clipper, gradclip.AutoClip)
        assert torch.equal(clone.clipper.threshold(), optimizer.clipper.threshold())
        assert len(clone.param_groups[0]["params"]) == len(optimizer.param_groups[0]["params"])
