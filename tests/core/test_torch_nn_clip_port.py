"""torch's own clipping tests (pytorch ``test/test_nn.py``) run on gradclip instead of torch.

A port, not a copy, of ``test_clip_grad_norm_error_if_nonfinite`` (all 560 sub-cases: every
norm type torch accepts, 0 and negative p included), ``test_clip_grad_norm`` (norm types
0.5 .. inf, foreach on and off, the decomposed ``get_total_norm`` + ``clip_grads_with_norm_``)
and ``test_clip_grad_value`` (foreach on and off). Each sub-case also checks that gradclip
answers what the installed torch answers, bit for bit, where torch's test only checks
properties.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

import gradclip
from tests.core.torch_parity import assert_grads_equal, clone_params

INF, NAN = math.inf, math.nan
NORMS_POS = [0.1, 1, 2, 3.5, INF]
NORMS_NEG = [-0.1, -1, -2, -3.5]
NORMS_EXCEPT_0 = NORMS_POS + NORMS_NEG
NORMS_ALL = NORMS_EXCEPT_0 + [0]

# (only one grad element set, a finite-grad parameter first, scalars, norm types whose
# total norm is non-finite, norm types whose total norm is finite): torch's table.
NONFINITE_CASES = [
    (False, False, [INF, -INF], NORMS_EXCEPT_0, [0]),
    (False, True, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (True, False, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (True, True, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (False, False, [NAN], NORMS_EXCEPT_0, [0]),
    (False, True, [NAN], NORMS_EXCEPT_0, [0]),
    (True, False, [NAN], NORMS_EXCEPT_0, [0]),
    (True, True, [NAN], NORMS_EXCEPT_0, [0]),
    (False, False, [2e22, -2e22], [], NORMS_ALL),
    (False, True, [2e22, -2e22], [], NORMS_ALL),
    (True, False, [2e22, -2e22], [], NORMS_ALL),
    (True, True, [2e22, -2e22], [], NORMS_ALL),
    (False, False, [2e200, -2e200], [3.5, 2, -2, -3.5], [INF, 1, 0.1, 0, -1, -0.1]),
    (False, True, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
    (True, False, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
    (True, True, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
]


def nonfinite_sub_cases():
    """Every (norm_type, error_if_nonfinite, scalar, one_elem, prefix, nonfinite) of torch's test."""
    for one_elem, prefix, scalars, nonfinite_norms, finite_norms in NONFINITE_CASES:
        for error_if_nonfinite in (False, True):
            for norms, is_nonfinite in ((nonfinite_norms, True), (finite_norms, False)):
                for norm_type, scalar in itertools.product(norms, scalars):
                    yield norm_type, error_if_nonfinite, scalar, one_elem, prefix, is_nonfinite


SUB_CASES = list(nonfinite_sub_cases())


def test_the_port_runs_all_560_sub_cases_of_torch():
    assert len(SUB_CASES) == 560


def scalar_grad_params(scalar, one_elem, prefix):
    """torch's parameters: ten ones whose grad is ``scalar`` (in one element or all), maybe
    after a one-element parameter whose grad is 1."""
    param = torch.ones(10, dtype=torch.float64, requires_grad=True)
    (param[1] if one_elem else param).mul(scalar).sum().backward()
    if not prefix:
        return [param]
    prefix_param = torch.ones(1, dtype=torch.float64, requires_grad=True)
    prefix_param.mul(1).sum().backward()
    return [prefix_param, param]


@pytest.mark.parametrize(
    ("norm_type", "error_if_nonfinite", "scalar", "one_elem", "prefix", "is_nonfinite"),
    SUB_CASES,
)
def test_clip_grad_norm_error_if_nonfinite(norm_type, error_if_nonfinite, scalar, one_elem, prefix,
                                           is_nonfinite):
    params = scalar_grad_params(scalar, one_elem, prefix)
    reference = clone_params(params)
    if is_nonfinite and error_if_nonfinite:
        before = [p.grad.clone() for p in params]
        with pytest.raises(RuntimeError, match=f"The total norm of order {float(norm_type)} for gradients"):
            gradclip.clip_grad_norm_(params, 1, norm_type=norm_type, error_if_nonfinite=True)
        for p, b in zip(params, before, strict=True):
            torch.testing.assert_close(p.grad, b, rtol=0, atol=0, equal_nan=True)
        return
    norm = gradclip.clip_grad_norm_(params, 1, norm_type=norm_type,
                                    error_if_nonfinite=error_if_nonfinite)
    expected = torch.nn.utils.clip_grad_norm_(reference, 1, norm_type=norm_type,
                                              error_if_nonfinite=error_if_nonfinite)
    assert bool(torch.isfinite(norm)) != is_nonfinite
    torch.testing.assert_close(norm, expected, rtol=0, atol=0, equal_nan=True)
    assert_grads_equal(params, reference)


def linear_with_grads(grads):
    torch.manual_seed(0)
    layer = torch.nn.Linear(10, 10)
    for p, g in zip(layer.parameters(), grads, strict=True):
        p._grad = g.clone().view_as(p)
    return layer


def norm_of(layer, norm_type):
    """torch's test's own reference norm, element by element."""
    norm_type = float(norm_type)
    if norm_type == INF:
        return max(p.grad.abs().max() for p in layer.parameters())
    return sum(p.grad.abs().pow(norm_type).sum() for p in layer.parameters()) ** (1.0 / norm_type)


def common_scale(layer, grads):
    scale = torch.cat([p.grad.div(g).view(-1) for p, g in zip(layer.parameters(), grads, strict=True)])
    torch.testing.assert_close(scale.std(), torch.tensor(0.0))  # torch's assertEqual tolerance
    return scale[0]


LARGE = (torch.arange(1.0, 101).view(10, 10), torch.ones(10).div(1000))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_clip_grad_norm_scales_every_gradient_alike_down_to_max_norm(norm_type, foreach):
    layer = linear_with_grads(LARGE)
    before = norm_of(layer, norm_type)
    norm = gradclip.clip_grad_norm_(layer.parameters(), 2, norm_type=norm_type, foreach=foreach)
    torch.testing.assert_close(norm, before)
    torch.testing.assert_close(norm_of(layer, norm_type), torch.tensor(2.0))
    common_scale(layer, LARGE)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_decomposed_get_total_norm_then_clip_grads_with_norm(norm_type, foreach):
    layer = linear_with_grads(LARGE)
    before = norm_of(layer, norm_type)
    grads = [p.grad for p in layer.parameters()]
    total = gradclip.get_total_norm(grads, norm_type=norm_type, foreach=foreach)
    gradclip.clip_grads_with_norm_(layer.parameters(), 2, total, foreach=foreach)
    torch.testing.assert_close(total, before)
    torch.testing.assert_close(norm_of(layer, norm_type), torch.tensor(2.0))
    common_scale(layer, LARGE)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_small_gradients_are_left_unchanged(norm_type, foreach):
    small = (torch.rand(10, 10, generator=torch.Generator().manual_seed(1)).div(10000),
             torch.ones(10).div(500))
    layer = linear_with_grads(small)
    before = norm_of(layer, norm_type)
    norm = gradclip.clip_grad_norm_(layer.parameters(), 2, norm_type=norm_type, foreach=foreach)
    torch.testing.assert_close(norm, before)
    assert norm_of(layer, norm_type) <= 2
    torch.testing.assert_close(common_scale(layer, small), torch.tensor(1.0))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_clip_grad_norm_accepts_a_single_tensor(norm_type, foreach):
    grad = torch.arange(1.0, 101).view(10, 10)
    single, listed = torch.randn(10, 10), torch.randn(10, 10)
    single._grad, listed._grad = grad.clone(), grad.clone()
    gradclip.clip_grad_norm_(single, 2, norm_type=norm_type, foreach=foreach)
    gradclip.clip_grad_norm_([listed], 2, norm_type=norm_type, foreach=foreach)
    assert torch.equal(single.grad, listed.grad)


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_norm_warns_on_an_exhausted_generator(foreach):
    params = linear_with_grads(LARGE).parameters()
    for _ in params:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gradclip.clip_grad_norm_(params, 2, foreach=foreach)
    assert [str(w.message) for w in caught] == [
        "`parameters` is an empty generator, no gradient clipping will occur."
    ]


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_value_bounds_every_element_also_with_a_missing_grad(foreach):
    weight_grad, bias_grad = torch.arange(-50.0, 50).view(10, 10).div_(5), torch.ones(10).mul_(2)
    for grads in ([weight_grad, bias_grad], [weight_grad, None]):
        layer = torch.nn.Linear(10, 10)
        for p, g in zip(layer.parameters(), grads, strict=True):
            p._grad = None if g is None else g.clone().view_as(p)
        gradclip.clip_grad_value_(layer.parameters(), 2.5, foreach=foreach)
        for p in (p for p in layer.parameters() if p.grad is not None):
            assert p.grad.max() <= 2.5 and p.grad.min() >= -2.5


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_value_accepts_a_single_tensor(foreach):
    grad = torch.arange(-50.0, 50).view(10, 10).div_(5)
    single, listed = torch.randn(10, 10), torch.randn(10, 10)
    single._grad, listed._grad = grad.clone(), grad.clone()
    gradclip.clip_grad_value_(single, 2.5, foreach=foreach)
    gradclip.clip_grad_value_([listed], 2.5, foreach=foreach)
    assert torch.equal(single.grad, listed.grad)
