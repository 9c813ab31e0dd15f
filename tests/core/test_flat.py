"""Flat gradient buffers: views stay valid, ops take the O(1) path, answers match per-tensor."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import gradclip

# exact_norm=False: the 2-norm is one reduction, torch's a norm of norms: float32 rounding.
NORM_RTOL = 1e-5


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def backward(model: nn.Module, seed: int = 1, scale: float = 1.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 6, generator=generator)
    (model(x).square().sum() * scale).backward()


def twins(seed: int = 0, exact_norm: bool = False) -> tuple[nn.Module, nn.Module]:
    """Two identical models with gradients; the second one flattened."""
    plain = make_model(seed)
    backward(plain, scale=40.0)
    flat = copy.deepcopy(plain)  # Parameter.__deepcopy__ leaves .grad behind
    for p, q in zip(plain.parameters(), flat.parameters(), strict=True):
        q.grad = p.grad.clone()
    gradclip.flatten_grads_(flat, exact_norm=exact_norm)
    return plain, flat


def grads_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters()]


def assert_grads_close(a: nn.Module, b: nn.Module, rtol: float = 1e-5) -> None:
    for ga, gb in zip(grads_of(a), grads_of(b), strict=True):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=1e-7)


def assert_flat(model: nn.Module, buffer: torch.Tensor) -> None:
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel() * buffer.element_size()
    for p in model.parameters():
        assert start <= p.grad.data_ptr() < end


def test_flatten_makes_every_grad_a_view_of_one_contiguous_buffer():
    model = make_model()
    [flat] = gradclip.flatten_grads_(model)
    assert flat.buffer.numel() == sum(p.numel() for p in model.parameters())
    assert_flat(model, flat.buffer)


def test_flatten_keeps_the_current_gradient_values():
    plain, flat = twins()
    for ga, gb in zip(grads_of(plain), grads_of(flat), strict=True):
        assert torch.equal(ga, gb)


def test_views_survive_zero_grad_set_to_none_and_the_next_backward():
    plain, flat = twins()
    [buffer] = [b.buffer for b in gradclip.flatten_grads_(flat)]
    for model in (plain, flat):
        torch.optim.SGD(model.parameters(), lr=0.1).zero_grad()  # set_to_none=True
        backward(model, seed=7)
    assert_flat(flat, buffer)
    assert_grads_close(plain, flat, rtol=0)


def test_views_survive_zero_grad_without_set_to_none():
    plain, flat = twins()
    [buffer] = [b.buffer for b in gradclip.flatten_grads_(flat)]
    for model in (plain, flat):
        model.zero_grad(set_to_none=False)
        backward(model, seed=3)
    assert_flat(flat, buffer)
    assert_grads_close(plain, flat, rtol=0)


def test_micro_batches_accumulate_into_the_views_like_unflattened_gradients():
    plain, flat = twins()
    [buffer] = [b.buffer for b in gradclip.flatten_grads_(flat)]
    for model in (plain, flat):
        model.zero_grad()
        for seed in range(4):
            backward(model, seed=seed)
    assert_flat(flat, buffer)
    assert_grads_close(plain, flat)


def test_parameter_left_out_of_backward_gets_a_zero_gradient_not_none():
    model = make_model()
    gradclip.flatten_grads_(model)
    model.zero_grad()
    model[0](torch.randn(2, 6)).sum().backward()
    assert model[4].weight.grad is not None
    assert torch.count_nonzero(model[4].weight.grad) == 0


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, "inf"])
def test_clip_grad_norm_on_flat_buffer_is_bit_identical_to_torch_by_default(norm_type):
    plain, flat = twins(exact_norm=True)
    norm_torch = torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5, norm_type)
    norm_flat = gradclip.clip_grad_norm_(flat.parameters(), 0.5, norm_type)
    assert torch.equal(norm_flat, norm_torch)
    for ga, gb in zip(grads_of(plain), grads_of(flat), strict=True):
        assert torch.equal(ga, gb)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0])
def test_fast_norm_on_flat_buffer_matches_per_tensor_path_to_float_rounding(norm_type):
    plain, flat = twins()
    norm_plain = gradclip.clip_grad_norm_(plain.parameters(), 0.5, norm_type)
    norm_flat = gradclip.clip_grad_norm_(flat.parameters(), 0.5, norm_type)
    torch.testing.assert_close(norm_flat, norm_plain, rtol=NORM_RTOL, atol=0)
    assert_grads_close(plain, flat)


def test_fast_inf_norm_on_flat_buffer_is_bit_identical():
    plain, flat = twins()
    norm_plain = gradclip.clip_grad_norm_(plain.parameters(), 0.5, "inf")
    norm_flat = gradclip.clip_grad_norm_(flat.parameters(), 0.5, "inf")
    assert torch.equal(norm_flat, norm_plain)
    for ga, gb in zip(grads_of(plain), grads_of(flat), strict=True):
        assert torch.equal(ga, gb)


def test_clip_grad_value_on_flat_buffer_is_bit_identical():
    plain, flat = twins()
    gradclip.clip_grad_value_(plain.parameters(), 0.05)
    gradclip.clip_grad_value_(flat.parameters(), 0.05)
    for ga, gb in zip(grads_of(plain), grads_of(flat), strict=True):
        assert torch.equal(ga, gb)


def test_get_total_norm_and_clip_grads_with_norm_on_flat_views_match_per_tensor():
    plain, flat = twins()
    norm_plain = gradclip.get_total_norm(grads_of(plain))
    norm_flat = gradclip.get_total_norm(grads_of(flat))
    torch.testing.assert_close(norm_flat, norm_plain, rtol=NORM_RTOL, atol=0)
    gradclip.clip_grads_with_norm_(plain.parameters(), 0.5, norm_plain)
    gradclip.clip_grads_with_norm_(flat.parameters(), 0.5, norm_plain)
    for ga, gb in zip(grads_of(plain), grads_of(flat), strict=True):
        assert torch.equal(ga, gb)


def count_ops(parameters: list[torch.Tensor]) -> int:
    """Kernel calls to clip; ``foreach=False`` makes the per-tensor path one call per tensor."""
    with OpCounter() as counter:
        gradclip.clip_grad_norm_(parameters, 1.0, foreach=False)
        gradclip.clip_grad_value_(parameters, 1.0, foreach=False)
    return counter.count


def flat_parameters(count: int) -> list[nn.Parameter]:
    params = [nn.Parameter(torch.randn(3)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(3)
    gradclip.flatten_grads_(params, exact_norm=False)
    return params


def test_flat_buffers_are_clipped_in_a_number_of_kernels_independent_of_tensor_count():
    assert count_ops(flat_parameters(5)) == count_ops(flat_parameters(50))


def test_gradient_replaced_by_hand_takes_the_normal_path_with_the_right_answer():
    plain, flat = twins()
    for model in (plain, flat):
        model[2].weight.grad = torch.full_like(model[2].weight, 3.0)
    assert count_ops(list(flat.parameters())) == count_ops(list(plain.parameters()))
    assert_grads_close(plain, flat)


def test_gradient_rebound_with_data_takes_the_normal_path():
    plain, flat = twins()
    for model in (plain, flat):
        model[2].weight.grad.data = torch.full_like(model[2].weight, 3.0)
    norm_plain = gradclip.clip_grad_norm_(plain.parameters(), 0.5)
    norm_flat = gradclip.clip_grad_norm_(flat.parameters(), 0.5)
    torch.testing.assert_close(norm_flat, norm_plain, rtol=NORM_RTOL, atol=0)
    assert_grads_close(plain, flat)


def test_clipping_a_subset_of_flat_parameters_leaves_the_others_alone():
    plain, flat = twins()
    before = [g.clone() for g in grads_of(flat)]
    subset = list(flat.parameters())[:2]
    norm_flat = gradclip.clip_grad_norm_(subset, 0.1)
    norm_plain = gradclip.clip_grad_norm_(list(plain.parameters())[:2], 0.1)
    assert torch.equal(norm_flat, norm_plain)
    for g, old in zip(grads_of(flat)[2:], before[2:], strict=True):
        assert torch.equal(g, old)


def test_parameters_in_another_order_still_take_the_flat_path():
    params = flat_parameters(20)
    assert count_ops(list(reversed(params))) == count_ops(params)


def test_mixed_dtypes_get_one_buffer_each():
    model = make_model()
    model[4].double()
    buffers = gradclip.flatten_grads_(model)
    assert sorted(str(b.buffer.dtype) for b in buffers) == ["torch.float32", "torch.float64"]


def test_flattening_again_stops_the_old_buffer_being_used():
    model = make_model()
    [old] = gradclip.flatten_grads_(model)
    [new] = gradclip.flatten_grads_(model)
    model.zero_grad()
    backward(model)
    assert_flat(model, new.buffer)
    assert old.buffer.data_ptr() != new.buffer.data_ptr()


def test_generator_of_parameters_takes_the_flat_path_and_clips_everything():
    params = flat_parameters(20)
    with OpCounter() as from_generator:
        gradclip.clip_grad_norm_((p for p in params), 1.0, foreach=False)
    with OpCounter() as from_list:
        gradclip.clip_grad_norm_(params, 1.0, foreach=False)
    assert from_generator.count == from_list.count


def test_named_parameters_take_the_flat_path():
    plain, flat = twins()
    norm_plain = gradclip.clip_grad_norm_(plain.named_parameters(), 0.5)
    norm_flat = gradclip.clip_grad_norm_(flat.named_parameters(), 0.5)
    torch.testing.assert_close(norm_flat, norm_plain, rtol=NORM_RTOL, atol=0)
    assert_grads_close(plain, flat)


def test_error_policy_on_flat_buffers_still_names_the_parameter():
    _, flat = twins()
    flat[2].bias.grad[0] = float("nan")
    with pytest.raises(RuntimeError, match="2.bias"):
        gradclip.clip_grad_norm_(flat.named_parameters(), 1.0, nonfinite="error")


def test_skip_policy_on_flat_buffers_zeroes_every_gradient():
    _, flat = twins()
    flat[2].bias.grad[0] = float("inf")
    gradclip.clip_grad_norm_(flat.parameters(), 1.0, nonfinite="skip")
    assert all(torch.count_nonzero(g) == 0 for g in grads_of(flat))


SPECS = ["norm:0.5", "value:0.05", "agc:0.01", "autoclip:0.1", "zclip", "none"]


@pytest.mark.parametrize("exact_norm", [True, False], ids=["exact", "fast"])
@pytest.mark.parametrize("spec", SPECS)
def test_every_strategy_on_flat_buffers_matches_per_tensor_over_steps(spec, exact_norm):
    plain, flat = twins(exact_norm=exact_norm)
    clippers = [gradclip.from_spec(spec), gradclip.from_spec(spec)]
    for step in range(6):
        for model, clipper in zip((plain, flat), clippers, strict=True):
            model.zero_grad()
            backward(model, seed=step, scale=1.0 + 10.0 * (step % 3))
            clipper.clip_(model.parameters())
        assert_grads_close(plain, flat, rtol=1e-4)


def test_argument_errors_are_unchanged_once_some_gradients_are_flattened():
    flat_parameters(3)
    with pytest.raises(TypeError, match="parameters must be a tensor, an iterable"):
        gradclip.clip_grad_value_(3.0, 1.0)
    with pytest.raises(TypeError, match=r"parameters\[0\] is a float"):
        gradclip.clip_grad_norm_([1.0], 1.0)
