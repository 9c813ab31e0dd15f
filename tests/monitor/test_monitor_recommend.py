"""Threshold recommendation: percentiles of observed norms and magnitudes, as valid specs."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip
from gradclip import recommend_thresholds
from gradclip.monitor.recommend import sample_element_magnitudes, spec_number


def test_norm_threshold_is_the_chosen_percentile_of_observed_norms():
    norms = [float(n) for n in range(1, 101)]
    recommendation = recommend_thresholds(norms, percentile=90)
    assert recommendation.norm_threshold == pytest.approx(90.1)  # 1 + 0.9 * 99


def test_default_norm_threshold_is_the_90th_percentile():
    norms = [float(n) for n in range(11)]
    assert recommend_thresholds(norms).norm_threshold == pytest.approx(9.0)


def test_nonfinite_norms_are_left_out_and_counted():
    recommendation = recommend_thresholds([0.2, math.nan, 0.4, math.inf, 0.6], percentile=50)
    assert recommendation.norm_threshold == pytest.approx(0.4)
    assert recommendation.nonfinite_steps == 2
    assert recommendation.observed_steps == 5


def test_no_finite_norm_is_an_error():
    with pytest.raises(ValueError, match="no finite gradient norm"):
        recommend_thresholds([math.nan, math.inf])


def test_value_threshold_is_a_high_percentile_of_element_magnitudes():
    magnitudes = torch.linspace(0, 1, 1001)
    recommendation = recommend_thresholds([1.0], magnitudes, value_percentile=99.0)
    assert recommendation.value_threshold == pytest.approx(0.99)


@pytest.mark.parametrize("bad", [0, 100, -5, "50"])
def test_percentile_must_lie_strictly_between_0_and_100(bad):
    with pytest.raises(ValueError, match="percentile"):
        recommend_thresholds([1.0], percentile=bad)


def test_value_threshold_is_capped_so_its_norm_bound_is_the_norm_threshold():
    recommendation = recommend_thresholds([2.0], [0.5] * 10, element_count=400)
    assert recommendation.value_threshold == pytest.approx(2.0 / 20)


def test_value_threshold_below_the_cap_is_kept():
    recommendation = recommend_thresholds([2.0], [0.01] * 10, element_count=400)
    assert recommendation.value_threshold == pytest.approx(0.01)


def test_specs_are_ready_to_use_clip_specs():
    recommendation = recommend_thresholds([0.8347] * 3, [0.01234] * 10)
    assert recommendation.specs == ("norm:0.83", "value:0.012", "autoclip:0.1", "zclip")
    for spec in recommendation.specs:
        gradclip.from_spec(spec)
    assert str(recommendation).startswith("Recommended: --clip norm:0.83")


@pytest.mark.parametrize(("value", "text"), [(0.8347, "0.83"), (50.5, "50"), (1234.0, "1200"),
                                             (1.5e-5, "1.5e-05")])
def test_spec_numbers_keep_two_significant_digits(value, text):
    assert spec_number(value) == text


def test_magnitude_sample_draws_from_every_gradient():
    grads = [torch.full((100,), -2.0), torch.full((100,), 3.0)]
    sample = sample_element_magnitudes(grads, 50, torch.Generator().manual_seed(0))
    assert sample.numel() == 50
    assert set(sample.tolist()) == {2.0, 3.0}


def test_magnitude_sample_is_every_element_when_there_are_fewer_than_asked():
    sample = sample_element_magnitudes([torch.tensor([-1.0, 2.0])], 10)
    assert sorted(sample.tolist()) == [1.0, 2.0]
