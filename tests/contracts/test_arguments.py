"""Bad arguments get a clear ValueError/TypeError naming the argument and what is allowed."""

from __future__ import annotations

import pytest
import torch

import gradclip


def param():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    return p


@pytest.mark.parametrize("max_norm", [0, -1.0, float("nan"), float("inf")])
def test_max_norm_must_be_positive_and_finite(max_norm):
    with pytest.raises(ValueError, match=f"max_norm must be a positive finite number, got {max_norm!r}"):
        gradclip.clip_grad_norm_(param(), max_norm)


def test_max_norm_must_be_a_number():
    with pytest.raises(TypeError, match="max_norm must be a number, got str"):
        gradclip.clip_grad_norm_(param(), "1.0")


def test_clip_value_must_not_be_negative():
    with pytest.raises(ValueError, match="clip_value must be a non-negative finite number, got -0.5"):
        gradclip.clip_grad_value_(param(), -0.5)


@pytest.mark.parametrize("norm_type", ["two", "1e"])
def test_norm_type_must_be_a_number_as_torch_reads_it(norm_type):
    with pytest.raises(ValueError, match="norm_type must be a number or 'inf', got"):
        gradclip.clip_grad_norm_(param(), 1.0, norm_type)


@pytest.mark.parametrize("norm_type", [None, 1j, [2.0]])
def test_a_norm_type_of_another_type_is_a_type_error(norm_type):
    with pytest.raises(TypeError, match="norm_type must be a number or 'inf'"):
        gradclip.clip_grad_norm_(param(), 1.0, norm_type)


@pytest.mark.parametrize("max_norm", [torch.ones(2), torch.ones(0)])
def test_a_tensor_max_norm_holds_one_element(max_norm):
    with pytest.raises(ValueError, match="max_norm must be a number or a one-element tensor"):
        gradclip.clip_grad_norm_(param(), max_norm)


def test_a_non_tensor_in_the_list_is_a_type_error_naming_its_position():
    with pytest.raises(TypeError, match=r"parameters\[1\] is a list; expected a torch.Tensor"):
        gradclip.clip_grad_norm_([param(), [1.0, 2.0]], 1.0)


def test_a_non_iterable_is_a_type_error():
    with pytest.raises(TypeError, match="parameters must be a tensor, an iterable"):
        gradclip.clip_grad_value_(3.0, 1.0)


def test_get_total_norm_names_its_own_argument():
    with pytest.raises(TypeError, match=r"tensors\[0\] is a float"):
        gradclip.get_total_norm([1.0])


def test_a_tensor_max_norm_is_used_without_a_check_or_a_sync():
    p = param()
    gradclip.clip_grad_norm_(p, torch.tensor(0.5))
    torch.testing.assert_close(p.grad.norm(), torch.tensor(0.5), rtol=1e-5, atol=0)
