"""Every strategy's state survives a checkpoint: a resumed clipper gives the same thresholds."""

from __future__ import annotations

import io

import pytest
import torch

import gradclip

SPECS = [
    "none", "norm:1.0", "value:0.1", "agc:0.01", "autoclip:0.2", "autoclip:0.7,history_length=20",
    "zclip:warmup_steps=10", "zclip:warmup_steps=80,max_grad_norm=none", "zclip:mode=percentile",
    "zclip:skip_update_on_spike=true,clip_option=mean,nonfinite=skip",
    "adagc:warmup_steps=5", "adagc:warmup_steps=30,lambda_rel=1.1", "spikeskip:window=19,sigma=2",
    "spikeskip:window=40,sigma=3,nonfinite=skip", "agc:0.01+norm:1.0",
    "spikeskip:window=19,sigma=2+zclip:warmup_steps=10", "adagc:warmup_steps=5+autoclip:0.5",
]


def grads_for(step, params):
    """Deterministic per-step gradients with a spike every 17 steps."""
    generator = torch.Generator().manual_seed(1000 + step)
    scale = 20.0 if step % 17 == 0 else 0.3
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * scale


def make_params():
    return [torch.nn.Parameter(torch.ones(shape)) for shape in ((4, 3), (4,))]


def run(clipper, params, steps, start):
    thresholds = []
    for step in range(start, start + steps):
        grads_for(step, params)
        stats = clipper.clip_(params)
        thresholds.append((stats.threshold, stats.total_norm, [p.grad.clone() for p in params]))
    return thresholds


def checkpoint_round_trip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("spec", SPECS)
def test_resumed_clipper_gives_the_same_next_100_thresholds(spec):
    params = make_params()
    uninterrupted = gradclip.from_spec(spec)
    run(uninterrupted, params, 50, start=0)
    saved = checkpoint_round_trip(uninterrupted.state_dict())
    expected = run(uninterrupted, params, 100, start=50)

    resumed = gradclip.from_spec(spec)
    resumed.load_state_dict(saved)
    actual = run(resumed, params, 100, start=50)
    for (want_threshold, want_norm, want_grads), (threshold, norm, grads) in zip(
        expected, actual, strict=True
    ):
        assert (threshold is None) == (want_threshold is None)
        if threshold is not None:
            assert torch.equal(threshold, want_threshold)
        assert torch.equal(norm, want_norm)
        for a, b in zip(grads, want_grads, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("spec", ["autoclip:0.5", "zclip:warmup_steps=3"])
def test_a_fresh_clipper_differs_from_a_resumed_one(spec):
    # Guards the test above: without the loaded state the thresholds would not match.
    params = make_params()
    trained = gradclip.from_spec(spec)
    run(trained, params, 50, start=0)
    fresh = gradclip.from_spec(spec)
    expected = run(trained, params, 5, start=50)
    actual = run(fresh, params, 5, start=50)
    assert not all(
        a[0] is not None and b[0] is not None and torch.equal(a[0], b[0])
        for a, b in zip(expected, actual, strict=True)
    )


@pytest.mark.parametrize("spec", SPECS)
def test_state_dict_is_a_copy_not_a_view_of_live_state(spec):
    params = make_params()
    clipper = gradclip.from_spec(spec)
    run(clipper, params, 30, start=0)
    saved = clipper.state_dict()
    snapshot = checkpoint_round_trip(saved)
    run(clipper, params, 10, start=30)
    assert_same_state(saved, snapshot)


def assert_same_state(state, snapshot):
    """Equal tensors (NaN included) and values, through a chain's nested member states."""
    if isinstance(state, torch.Tensor):
        torch.testing.assert_close(state, snapshot, rtol=0, atol=0, equal_nan=True)
    elif isinstance(state, dict):
        assert state.keys() == snapshot.keys()
        for key, value in state.items():
            assert_same_state(value, snapshot[key])
    elif isinstance(state, (list, tuple)):
        assert len(state) == len(snapshot)
        for value, saved in zip(state, snapshot, strict=True):
            assert_same_state(value, saved)
    else:
        assert state == snapshot


def test_stateless_clipper_rejects_a_foreign_state_dict():
    with pytest.raises(ValueError, match="keeps no state"):
        gradclip.NormClip(1.0).load_state_dict({"history": torch.zeros(3)})
