"""AGC parity with optax.adaptive_grad_clip (jax on CPU), mapped to torch's weight layout."""

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


def optax_agc(params, grads, clipping, eps):
    transform = optax.adaptive_grad_clip(clipping, eps)
    to_jax = [jnp.asarray(t.detach().numpy().transpose(TO_OPTAX[t.ndim])) for t in params]
    updates, _ = transform.update(
        [jnp.asarray(g.numpy().transpose(TO_OPTAX[g.ndim])) for g in grads],
        transform.init(to_jax),
        to_jax,
    )
    inverse = {n: tuple(np.argsort(axes)) for n, axes in TO_OPTAX.items()}
    return [torch.from_numpy(np.array(u).transpose(inverse[u.ndim])) for u in updates]


def make_layer_params(seed, grad_scale):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(16, 8), (16,), (4, 3, 3, 3), (4,), (1,)]
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=generator))
        p.grad = torch.randn(shape, generator=generator) * grad_scale
        params.append(p)
    params[3].data.zero_()  # a zero-initialised bias: max(||W||, eps) must engage
    return params


@pytest.mark.parametrize("grad_scale", [1e-4, 0.05, 10.0])
@pytest.mark.parametrize("clipping", [0.01, 0.1, 1.0])
def test_agc_matches_optax_on_dense_conv_bias_and_scalar_parameters(grad_scale, clipping):
    params = make_layer_params(seed=int(grad_scale * 1000) + 7, grad_scale=grad_scale)
    expected = optax_agc(params, [p.grad.clone() for p in params], clipping, 1e-3)
    gradclip.adaptive_clip_grad_(params, clipping, eps=1e-3)
    for p, want in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=2e-6, atol=1e-9)


def test_agc_leaves_units_below_the_threshold_untouched_bit_for_bit():
    params = make_layer_params(seed=3, grad_scale=1e-6)
    before = [p.grad.clone() for p in params]
    gradclip.adaptive_clip_grad_(params, 0.5)
    for p, grad in zip(params, before, strict=True):
        assert torch.equal(p.grad, grad)


def test_agc_clips_each_output_row_to_clipping_times_its_weight_norm():
    weight = torch.nn.Parameter(torch.randn(6, 5))
    weight.grad = torch.randn(6, 5) * 100
    gradclip.adaptive_clip_grad_(weight, 0.02)
    ratio = weight.grad.norm(dim=1) / weight.detach().norm(dim=1)
    torch.testing.assert_close(ratio, torch.full((6,), 0.02), rtol=1e-5, atol=0)


def test_agc_returns_the_global_norm_before_clipping():
    params = make_layer_params(seed=9, grad_scale=3.0)
    expected = torch.nn.utils.get_total_norm([p.grad for p in params])
    total = gradclip.adaptive_clip_grad_(params, 0.01)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=0)


def test_unitwise_norm_treats_a_row_vector_as_one_unit_like_optax():
    x = torch.randn(1, 7)
    torch.testing.assert_close(gradclip.unitwise_norm(x), x.norm(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_agc_rejects_a_clipping_that_is_not_positive_and_finite(bad):
    with pytest.raises(ValueError, match="clipping must be a positive finite number"):
        gradclip.adaptive_clip_grad_([torch.nn.Parameter(torch.ones(2))], bad)
