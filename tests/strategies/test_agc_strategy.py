"""The AGC strategy: parity with optax.adaptive_grad_clip, per-group settings, clipped flag."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import gradclip

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

# torch layout -> optax layout: dense (out, in) -> (in, out); conv (out, in, kh, kw) -> HWIO.
TO_OPTAX = {1: (0,), 2: (1, 0), 4: (2, 3, 1, 0)}


def optax_agc(params, clipping, eps):
    """optax.adaptive_grad_clip's update for ``params``' gradients, back in torch layout."""
    transform = optax.adaptive_grad_clip(clipping, eps)
    weights = [jnp.asarray(p.detach().numpy().transpose(TO_OPTAX[p.ndim])) for p in params]
    grads = [jnp.asarray(p.grad.numpy().transpose(TO_OPTAX[p.ndim])) for p in params]
    updates, _ = transform.update(grads, transform.init(weights), weights)
    inverse = {ndim: tuple(np.argsort(axes)) for ndim, axes in TO_OPTAX.items()}
    return [torch.from_numpy(np.array(u).transpose(inverse[u.ndim])) for u in updates]


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.hidden = torch.nn.Linear(24, 10)
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(torch.tanh(self.conv(x)).flatten(1))))


def model_with_grads(seed, scale):
    torch.manual_seed(seed)
    model = ConvNet()
    x = torch.randn(5, 3, 4, 4)
    (model(x).pow(2).sum() * scale).backward()
    return model


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("clipping", [0.01, 0.1])
def test_agc_strategy_matches_optax_adaptive_grad_clip_on_conv_dense_and_bias(clipping, scale):
    model = model_with_grads(seed=int(scale * 10) + 1, scale=scale)
    params = list(model.parameters())
    expected = optax_agc(params, clipping, 1e-3)
    before = [p.grad.clone() for p in params]
    stats = gradclip.AGC(clipping=clipping).clip_(model.parameters())
    for p, want in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=2e-6, atol=1e-9)
    changed = any(not torch.equal(p.grad, b) for p, b in zip(params, before, strict=True))
    assert bool(stats.clipped) == changed
    assert stats.threshold is None


def test_agc_strategy_gradients_equal_the_functional_op():
    ours, theirs = model_with_grads(2, 10.0), model_with_grads(2, 10.0)
    stats = gradclip.AGC(0.02).clip_(ours.parameters())
    total_norm = gradclip.adaptive_clip_grad_(theirs.parameters(), 0.02)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    torch.testing.assert_close(stats.total_norm, total_norm)


def test_agc_clipped_flag_is_true_exactly_when_some_unit_was_scaled():
    small = model_with_grads(3, 1e-6)
    assert not gradclip.AGC(0.01).clip_(small.parameters()).clipped
    large = model_with_grads(3, 1e3)
    assert gradclip.AGC(0.01).clip_(large.parameters()).clipped


def test_nfnet_recipe_groups_leave_the_head_and_biases_unclipped():
    model = model_with_grads(4, 100.0)
    body = [model.conv.weight, model.hidden.weight]
    exempt = [model.head.weight, model.head.bias, model.conv.bias, model.hidden.bias]
    exempt_before = [p.grad.clone() for p in exempt]
    expected_body = optax_agc(body, 0.01, 1e-3)
    gradclip.AGC(0.01).clip_([{"params": body}, {"params": exempt, "clipping": None}])
    for p, want in zip(body, expected_body, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=2e-6, atol=1e-9)
    for p, before in zip(exempt, exempt_before, strict=True):
        assert torch.equal(p.grad, before)


def test_agc_groups_may_override_clipping_and_eps_per_group():
    model = model_with_grads(5, 100.0)
    first, second = [model.conv.weight], [model.hidden.weight, model.hidden.bias]
    expected = optax_agc(first, 0.05, 1e-3) + optax_agc(second, 0.2, 1e-2)
    gradclip.AGC(0.05).clip_([{"params": first}, {"params": second, "clipping": 0.2, "eps": 1e-2}])
    for p, want in zip(first + second, expected, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=2e-6, atol=1e-9)


def test_agc_group_with_bad_override_raises_naming_it():
    model = model_with_grads(6, 1.0)
    with pytest.raises(ValueError, match="clipping must be a positive finite number, got -1"):
        gradclip.AGC(0.01).clip_([{"params": model.parameters(), "clipping": -1}])
