"""The statistics of a learning-rate sweep: capped scores, bootstrap intervals, sensitivity,
loss spikes and rank groups with ties.

Every function here is pure Python on lists of floats, so that the benchmark's numbers can be
checked by hand (``tests/app/experiments/test_sweep_stats.py`` does).

References:
    Wortsman et al. (2023), "Small-scale proxies for large-scale Transformer training
    instabilities", ICLR 2024: the learning-rate sensitivity.
    Efron & Tibshirani (1993), "An Introduction to the Bootstrap": the percentile interval.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
SPIKE_WINDOW = 50  # previous steps that form the baseline
SPIKE_K = 6.0  # a spike: loss > median + SPIKE_K x MAD of the window
SPIKE_MIN_HISTORY = 10  # steps of history before spikes are counted
MAD_FLOOR = 1e-3  # the MAD used is at least this fraction of the median


def capped_score(value: float, diverged: bool, initial: float, higher_is_better: bool) -> float:
    """A run's final metric, no worse than the metric at initialisation.

    A diverged run (or one whose metric is not finite) scores ``initial``; so does a run that
    ended worse than it started. This is Wortsman et al.'s ``min(loss, initial loss)``.

    Args:
        value: the final validation metric of the run.
        diverged: whether the run diverged (its metric is then replaced).
        initial: the metric of the untrained model.
        higher_is_better: the direction of the metric.

    Returns:
        ``value`` capped at ``initial``.
    """
    if diverged or not math.isfinite(value):
        return initial
    return max(value, initial) if higher_is_better else min(value, initial)


def bootstrap_interval(samples: Sequence[Sequence[float]],
                       statistic: Callable[[list[list[float]]], float], *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``statistic`` over independent samples.

    Each resample draws every sample anew, with replacement and its own size, and applies
    ``statistic`` to the drawn samples (in order).

    Args:
        samples: independent samples (for example one per learning rate or per strategy).
        statistic: the number computed from the samples.
        resamples: bootstrap resamples.
        seed: the resampling RNG's seed (the interval is reproducible).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: if a sample is empty.
    """
    if not samples or any(len(sample) == 0 for sample in samples):
        raise ValueError("the bootstrap needs at least one value in every sample")
    rng = random.Random(seed)
    values = sorted(statistic([rng.choices(sample, k=len(sample)) for sample in samples])
                    for _ in range(resamples))
    return percentile_pair(values)


def bootstrap_ci(values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` (one per seed).

    Raises:
        ValueError: if ``values`` is empty.
    """
    return bootstrap_interval([values], lambda drawn: statistics.fmean(drawn[0]),
                              resamples=resamples, seed=seed)


def percentile_pair(ordered: Sequence[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of sorted bootstrap statistics (nearest rank)."""
    tail = (1 - CONFIDENCE) / 2
    last = len(ordered) - 1
    return ordered[round(tail * last)], ordered[round((1 - tail) * last)]


def lr_sensitivity(scores: Sequence[float], best: float, higher_is_better: bool) -> float:
    """Wortsman et al.'s learning-rate sensitivity of one strategy on one task.

    ``mean over the rates of |score(lr) - best|``, where ``score(lr)`` is the strategy's mean
    capped score at that rate (``capped_score``) and ``best`` the best mean score any
    strategy reached at any rate. 0 means as good as the best at every rate.

    Args:
        scores: the strategy's mean capped score at each rate of the grid.
        best: the best mean capped score of any strategy at any rate.
        higher_is_better: the direction of the metric.

    Returns:
        the sensitivity (in the metric's unit, never negative for a true best).
    """
    if not scores:
        raise ValueError("lr_sensitivity needs a score per learning rate")
    gaps = [(best - s) if higher_is_better else (s - best) for s in scores]
    return statistics.fmean(gaps)


def spike_steps(losses: Sequence[float], *, window: int = SPIKE_WINDOW, k: float = SPIKE_K,
                min_history: int = SPIKE_MIN_HISTORY) -> list[int]:
    """Indices of the training losses that spike above a robust running baseline.

    Step ``t`` spikes when ``loss[t] > median(w) + k * MAD(w)``, ``w`` the finite losses of the
    ``window`` steps before it (at least ``min_history`` of them); ``MAD`` is the median
    absolute deviation from the median, at least ``0.1 %`` of the median. A non-finite loss after finite ones is a spike too.
    This is the rolling median/MAD detector of OLMo's and axolotl's loss-spike monitors.

    Args:
        losses: one training loss per optimizer step.
        window: how many previous steps form the baseline.
        k: how many MADs above the median a spike lies.
        min_history: steps needed before any spike is counted.

    Returns:
        the spiking step indices (0-based), in order.
    """
    spikes = []
    for t in range(min_history, len(losses)):
        history = [x for x in losses[max(0, t - window):t] if math.isfinite(x)]
        if len(history) < min_history:
            continue
        loss = losses[t]
        if not math.isfinite(loss):
            spikes.append(t)
            continue
        median = statistics.median(history)
        mad = statistics.median(abs(x - median) for x in history)
        # a flat history (MAD 0) would call any rise a spike: at least 0.1 % of the median
        if loss > median + k * max(mad, MAD_FLOOR * abs(median)):
            spikes.append(t)
    return spikes


def rank_groups(means: dict[str, float], intervals: dict[str, tuple[float, float]],
                higher_is_better: bool) -> dict[str, int]:
    """Rank groups with ties: a strategy shares the best's group when their intervals overlap.

    The best remaining strategy (by mean) opens group ``g``; every remaining strategy whose
    interval overlaps that strategy's interval joins group ``g``; repeat on the rest.

    Args:
        means: mean score per strategy.
        intervals: ``(low, high)`` per strategy (the same keys).
        higher_is_better: the direction of the score.

    Returns:
        the group (1 = best) of each strategy.
    """
    order = sorted(means, key=lambda name: -means[name] if higher_is_better else means[name])
    groups: dict[str, int] = {}
    group = 0
    for leader in order:
        if leader in groups:
            continue
        group += 1
        low, high = intervals[leader]
        for name in order:
            other_low, other_high = intervals[name]
            if name not in groups and other_low <= high and low <= other_high:
                groups[name] = group
    return groups


def scores_of(records: Sequence[dict[str, Any]], task: str, strategy: str, lr: float,
              field: str = "score") -> list[float]:
    """``field`` of the scoring runs of one (task, strategy, rate)."""
    return [float(r[field]) for r in records if r["stage"] == "scoring" and r["task"] == task
            and r["strategy"] == strategy and r["lr"] == lr]
