"""A run's parts from its settings: the clipper under the run's one non-finite policy."""

from __future__ import annotations

import math

import pytest
import torch

from gradclip.app.errors import UserError
from gradclip.app.training.setup import build_scheduler, clipper_from_spec, lr_factor


@pytest.mark.parametrize("spec", ["none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1",
                                  "zclip"])
def test_nonfinite_flag_is_given_to_every_strategy(spec):
    clipper = clipper_from_spec(spec, "skip")
    assert clipper.nonfinite == "skip"
    assert type(clipper) is type(clipper_from_spec(spec))


def test_a_policy_in_the_spec_stands_when_the_flag_is_left_at_its_default():
    assert clipper_from_spec("norm:1.0,nonfinite=error").nonfinite == "error"
    assert clipper_from_spec("norm:1.0,nonfinite=error", "error").nonfinite == "error"


def test_two_different_policies_are_a_user_error():
    with pytest.raises(UserError, match="give the policy once"):
        clipper_from_spec("norm:1.0,nonfinite=error", "skip")


def test_a_bad_spec_is_one_line_naming_it():
    with pytest.raises(UserError, match=r"invalid clipping spec 'bogus:1'") as error:
        clipper_from_spec("bogus:1")
    assert "\n" not in str(error.value)


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor():
    factors = [lr_factor(step, "cosine", 110, warmup_steps=10, min_lr_ratio=0.1)
               for step in range(111)]
    assert factors[:10] == pytest.approx([(step + 1) / 11 for step in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert factors[110] == pytest.approx(0.1)
    assert all(later <= earlier for earlier, later in zip(factors[10:-1], factors[11:], strict=True))


def test_without_warmup_or_floor_the_cosine_schedule_is_the_one_of_before():
    for step in range(0, 101, 7):
        before = 0.5 * (1.0 + math.cos(math.pi * min(step / 100, 1.0)))
        assert lr_factor(step, "cosine", 100) == before


def test_warmdown_settles_at_the_floor_and_constant_ignores_it():
    assert lr_factor(100, "warmdown", 100, min_lr_ratio=0.25) == pytest.approx(0.25)
    assert lr_factor(50, "warmdown", 100, min_lr_ratio=0.25) == 1.0
    assert lr_factor(99, "constant", 100, warmup_steps=5, min_lr_ratio=0.25) == 1.0
    assert lr_factor(0, "constant", 100, warmup_steps=5) == pytest.approx(1 / 6)


def test_the_scheduler_applies_the_factor_to_every_parameter_group():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [weight]},
                                   {"params": [torch.nn.Parameter(torch.zeros(1))],
                                    "weight_decay": 0.0}], lr=1.0)
    scheduler = build_scheduler(optimizer, "cosine", 20, warmup_steps=4, min_lr_ratio=0.1)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.2)] * 2
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.1)] * 2
