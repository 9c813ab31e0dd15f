"""The benchmark's statistics on small cases computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradclip.app.experiments.sweep_stats import (
    bootstrap_ci,
    bootstrap_interval,
    capped_score,
    lr_sensitivity,
    rank_groups,
    spike_steps,
)


def test_a_diverged_or_nan_run_scores_the_untrained_metric():
    assert capped_score(0.5, True, 4.0, higher_is_better=False) == 4.0
    assert capped_score(math.nan, False, 4.0, higher_is_better=False) == 4.0
    assert capped_score(9.0, False, 4.0, higher_is_better=False) == 4.0  # worse than at start
    assert capped_score(1.5, False, 4.0, higher_is_better=False) == 1.5
    assert capped_score(0.1, False, 0.25, higher_is_better=True) == 0.25  # below chance


def test_bootstrap_of_one_value_is_that_value():
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def test_bootstrap_of_two_values_spans_both():
    # resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: both tails hold > 2.5 %
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_of_three_values_reaches_the_extremes():
    # the all-1 and all-3 resamples each have probability 1/27 = 3.7 % > 2.5 %
    assert bootstrap_ci([1.0, 2.0, 3.0]) == (1.0, 3.0)


def test_bootstrap_of_many_equal_halves_is_narrower_than_the_range():
    low, high = bootstrap_ci([0.0] * 20 + [1.0] * 20)
    assert 0.25 < low < 0.5 < high < 0.75


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8))
def test_the_interval_lies_within_the_sample_and_is_ordered(values):
    low, high = bootstrap_ci(values, resamples=200)
    slack = 1e-12 * max(abs(v) for v in values)  # a mean of equal values may round
    assert min(values) - slack <= low <= high <= max(values) + slack


def test_bootstrap_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([[1.0], []], lambda drawn: 0.0)


def test_sensitivity_is_the_mean_gap_to_the_best():
    assert lr_sensitivity([1.0, 2.0, 4.0], best=1.0, higher_is_better=False) == pytest.approx(4 / 3)
    assert lr_sensitivity([0.9, 0.5], best=0.9, higher_is_better=True) == pytest.approx(0.2)


def test_sensitivity_of_wortsman_with_a_diverged_rate_capped_at_the_initial_loss():
    initial = 4.0
    scores = [capped_score(1.0, False, initial, False), capped_score(math.nan, True, initial,
                                                                     False),
              capped_score(10.0, False, initial, False)]
    assert scores == [1.0, 4.0, 4.0]
    assert lr_sensitivity(scores, best=1.0, higher_is_better=False) == pytest.approx(2.0)


def test_a_loss_above_median_plus_six_mads_is_a_spike():
    ramp = [1.0 + 0.02 * i for i in range(10)] * 5  # 1.00 ... 1.18, five times
    # median 1.09; deviations 0.01 ... 0.09, ten of each: MAD 0.05; threshold 1.39
    assert spike_steps(ramp + [1.38]) == []
    assert spike_steps(ramp + [1.40]) == [50]


def test_a_non_finite_loss_after_finite_ones_is_a_spike():
    assert spike_steps([1.0 + 0.02 * i for i in range(10)] * 2 + [math.nan]) == [20]


def test_spikes_need_ten_steps_of_history():
    assert spike_steps([1.0] * 5 + [100.0]) == []


def test_a_flat_history_does_not_make_every_rise_a_spike():
    assert spike_steps([2.0] * 30 + [2.001]) == []
    assert spike_steps([2.0] * 30 + [2.5]) == [30]


def test_only_the_window_before_a_step_is_its_baseline():
    # the ramp at 10 after the ramp at 1 is a spike at its start, then the baseline
    low = [1.0 + 0.02 * i for i in range(10)] * 5
    high = [10.0 + 0.02 * i for i in range(10)] * 5
    assert spike_steps(low + high + [10.2]) == list(range(50, 75))


def test_strategies_whose_intervals_overlap_the_best_share_its_group():
    groups = rank_groups({"a": 1.0, "b": 1.5, "c": 5.0},
                         {"a": (0.5, 1.5), "b": (1.2, 1.8), "c": (4.0, 6.0)},
                         higher_is_better=False)
    assert groups == {"a": 1, "b": 1, "c": 2}


def test_overlap_is_with_the_group_leader_not_a_chain():
    groups = rank_groups({"a": 0.5, "b": 1.5, "c": 2.5},
                         {"a": (0.0, 1.0), "b": (0.9, 2.0), "c": (1.9, 3.0)},
                         higher_is_better=False)
    assert groups == {"a": 1, "b": 1, "c": 2}


def test_higher_is_better_puts_the_largest_first():
    groups = rank_groups({"a": 0.9, "b": 0.5}, {"a": (0.85, 0.95), "b": (0.4, 0.6)},
                         higher_is_better=True)
    assert groups == {"a": 1, "b": 2}
