"""Library calls given the wrong kind of argument raise ValueError/TypeError naming it."""

from __future__ import annotations

import math

import pytest
import torch

from gradclip import ClippedOptimizer
from gradclip.agc import unitwise_norm
from gradclip.flat import FlatGradBuffer
from gradclip.parameters import MIN_THRESHOLD
from gradclip.strategies import AGC, NormClip, ZClip


def test_a_flat_buffer_of_no_parameters_names_params():
    with pytest.raises(ValueError, match="params must hold at least one parameter"):
        FlatGradBuffer([])


def test_a_flat_buffer_of_numbers_names_params():
    with pytest.raises(TypeError, match="params must be tensors, got float"):
        FlatGradBuffer([1.0])


def clipped_optimizer() -> ClippedOptimizer:
    parameter = torch.nn.Parameter(torch.ones(2))
    return ClippedOptimizer(torch.optim.SGD([parameter], lr=0.1), NormClip(1.0))


def test_loading_a_plain_optimizers_state_names_state_dict_and_the_fix():
    clipped = clipped_optimizer()
    plain = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="state_dict must come from ClippedOptimizer"
                                         r".*clipped.optimizer.load_state_dict"):
        clipped.load_state_dict(plain)


def test_loading_junk_names_state_dict():
    with pytest.raises(TypeError, match="state_dict must be a dict .* got str"):
        clipped_optimizer().load_state_dict("junk")


def test_a_clipped_optimizers_own_state_still_loads():
    clipped = clipped_optimizer()
    state = clipped.state_dict()
    state["skipped_steps"] = 3
    clipped.load_state_dict(state)
    assert clipped.skipped_steps == 3


def test_unitwise_norm_of_a_list_names_x():
    with pytest.raises(TypeError, match="x must be a tensor, got list"):
        unitwise_norm([1.0, 2.0])


@pytest.mark.parametrize("make", [
    lambda value: NormClip(value), lambda value: ZClip(max_grad_norm=value),
    lambda value: AGC(value)], ids=["NormClip", "ZClip", "AGC"])
@pytest.mark.parametrize("value", [1e-46, 5e-324, 1e-39])
def test_a_threshold_that_is_zero_or_subnormal_in_float32_is_refused(make, value):
    assert torch.tensor(value, dtype=torch.float32).item() < MIN_THRESHOLD
    with pytest.raises(ValueError, match="must be at least 1.18e-38"):
        make(value)


def test_the_smallest_threshold_accepted_is_a_normal_float32():
    assert torch.finfo(torch.float32).tiny == MIN_THRESHOLD
    assert NormClip(MIN_THRESHOLD).max_norm == MIN_THRESHOLD


def test_a_nan_norm_type_is_refused_naming_it():
    with pytest.raises(ValueError, match="norm_type must be a number or 'inf', got nan"):
        NormClip(1.0, norm_type=math.nan)


@pytest.mark.parametrize("optimizer", ["x", None, 5])
def test_a_clipped_optimizer_of_no_optimizer_names_optimizer(optimizer):
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer"):
        ClippedOptimizer(optimizer, "norm:1")


def test_a_flat_buffer_of_one_tensor_names_params():
    with pytest.raises(TypeError, match="params must be a sequence of parameters, got one"):
        FlatGradBuffer(torch.zeros(3, requires_grad=True))


def test_a_flat_buffer_of_tensors_without_gradients_names_params():
    with pytest.raises(ValueError, match="params must be parameters that require grad"):
        FlatGradBuffer([torch.zeros(3)])


def test_a_flat_buffer_of_two_dtypes_names_params():
    with pytest.raises(ValueError, match="params must share one dtype and device"):
        FlatGradBuffer([torch.nn.Parameter(torch.zeros(3)),
                        torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))])
