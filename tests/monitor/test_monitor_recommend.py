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


def test_nonfinite_norms_are_counted_and_the_steps_after_the_first_are_left_out():
    recommendation = recommend_thresholds([0.2, 0.3, math.nan, 0.4, math.inf], percentile=50)
    assert recommendation.norm_threshold == pytest.approx(0.25)
    assert recommendation.kept_steps == 2
    assert recommendation.regime == "diverged"
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


def diverging(head: list[float]) -> list[float]:
    return head + [1000.0 * max(head), math.nan]


def test_a_stable_profile_recommends_agc_alone_and_says_why_not_its_norm():
    recommendation = recommend_thresholds([0.8347] * 20, [0.01234] * 10)
    assert recommendation.regime == "stable"
    assert recommendation.specs == ("agc:0.01",)
    left_out = dict(recommendation.not_recommended)
    assert "did not diverge" in left_out["norm:0.83"]
    assert str(recommendation) == "Recommended: --clip agc:0.01"


def test_a_stable_profile_with_isolated_spikes_adds_spikeskip_on_its_norm_after_agc():
    norms = [1.0] * 60 + [8.0] + [1.0] * 20
    recommendation = recommend_thresholds(norms, percentile=50)
    assert recommendation.specs == ("agc:0.01", "spikeskip+norm:1")
    for spec in recommendation.specs:
        gradclip.from_spec(spec)


def test_a_diverged_profile_recommends_its_norm_first_then_agc():
    recommendation = recommend_thresholds(diverging([0.8347] * 20), lr=0.1)
    assert recommendation.specs == ("norm:0.83", "agc:0.01")
    assert recommendation.kept_steps == 20
    for spec in recommendation.specs:
        gradclip.from_spec(spec)
    assert str(recommendation) == "Recommended: --clip norm:0.83 | --clip agc:0.01"


def test_a_norm_whose_clipped_sgd_step_is_too_long_is_left_out():
    recommendation = recommend_thresholds(diverging([8.0] * 20), lr=1.0)
    assert recommendation.specs == ("agc:0.01",)
    assert "lr x 8 = 8" in dict(recommendation.not_recommended)["norm:8"]


def test_a_value_threshold_is_recommended_only_when_its_percentile_is_within_the_cap():
    consistent = recommend_thresholds(diverging([2.0] * 20), [0.01] * 10, element_count=400)
    assert consistent.specs == ("norm:2", "agc:0.01", "value:0.01")
    capped = recommend_thresholds(diverging([2.0] * 20), [0.5] * 10, element_count=400)
    assert capped.value_threshold == pytest.approx(0.1)
    assert "value:0.1" not in capped.specs
    assert capped.value_rule.startswith("norm/sqrt(n) cap")


def test_adaptive_strategies_are_never_on_the_line_and_carry_the_benchmark_caveat():
    for norms in ([1.0] * 20, diverging([1.0] * 20)):
        recommendation = recommend_thresholds(norms)
        assert not any(s.startswith(("autoclip", "zclip")) for s in recommendation.specs)
        left_out = dict(recommendation.not_recommended)
        assert "autoclip:0.1 learnt it on 0 and diverged on 3" in left_out["autoclip:0.1"]
        assert "zclip" in left_out


def test_the_norm_rule_label_names_the_percentile_and_the_steps():
    assert recommend_thresholds(diverging([1.0] * 20)).norm_rule == "p90 of steps 1-20"


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
