"""The claims table: each strategy's paper claim, the setting here that tests it, the answer.

An effect is ``baseline - strategy`` on a measure where lower is better (learning-rate
sensitivity, loss spikes per run), or the improvement of the best-rate score, so that a
positive effect always goes the paper's way. Its 95 % interval is a bootstrap over the scoring
seeds at every rate, both strategies resampled independently. The answer:

- **reproduced**: the whole interval is above 0;
- **not reproduced**: the whole interval is below 0 (the opposite of the claim);
- **inconclusive**: the interval holds 0 (no difference this benchmark can see).

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural networks".
    Mikolov (2012), "Statistical language models based on neural networks" (clip by value).
    Brock, De, Smith & Simonyan (2021), "High-performance large-scale image recognition without
    normalization" (AGC).
    Seetharaman, Wichern, Pardo & Le Roux (2020), "AutoClip: adaptive gradient clipping for
    source separation networks".
    Kumar, Owen, Ashkboos & Hoefler (2025), "ZClip: adaptive spike mitigation for LLM
    pre-training".
    Wang et al. (2025), "AdaGC: improving training stability for large language model
    pretraining".
    OLMo-core, ``SkipStepOptimizer`` (Allen Institute for AI).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gradclip.app.experiments.sweep_stats import bootstrap_interval, lr_sensitivity, scores_of


@dataclass(frozen=True)
class Claim:
    """A paper's claim and how this benchmark tests it."""

    strategy: str
    paper: str
    claim: str
    tasks: tuple[str, ...]  # the first of these the suite ran is the test
    measure: str  # "sensitivity" | "spikes" | "best"
    baseline: str


CLAIMS = (
    Claim("norm", "Pascanu et al. 2013", "clipping the global norm keeps SGD on a recurrent "
          "network from being derailed by exploding gradients", ("adding-rnn", "lm-rnn"),
          "sensitivity", "none"),
    Claim("value", "Mikolov 2012", "clipping each gradient value stabilises recurrent "
          "training", ("adding-rnn", "lm-rnn"), "sensitivity", "none"),
    Claim("agc", "Brock et al. 2021", "unit-wise adaptive clipping keeps training stable at "
          "larger learning rates", ("lm-transformer",), "sensitivity", "none"),
    Claim("autoclip", "Seetharaman et al. 2020", "a percentile-of-history threshold improves "
          "the final metric over no clipping", ("lm-transformer",), "best", "none"),
    Claim("zclip", "Kumar et al. 2025", "z-score clipping expands the viable learning-rate "
          "range beyond a fixed threshold", ("lm-transformer",), "sensitivity", "norm"),
    Claim("adagc", "Wang et al. 2025", "per-tensor adaptive clipping removes loss spikes that "
          "global-norm clipping lets through", ("lm-transformer",), "spikes", "norm"),
    Claim("spikeskip+norm", "OLMo-core (step skip)", "skipping outlier steps prevents loss "
          "spikes", ("lm-transformer",), "spikes", "norm"),
)

MEASURE_NAMES = {"sensitivity": "LR sensitivity", "spikes": "spikes per run (mean over rates)",
                 "best": "score at the best rate"}


def statistic(measure: str, best: float, higher: bool
              ) -> Callable[[list[list[float]]], float]:
    """The measure of one strategy from its per-rate samples (lower is better, except
    ``best`` where the direction is the metric's)."""
    def sensitivity(drawn: list[list[float]]) -> float:
        return lr_sensitivity([statistics.fmean(d) for d in drawn], best, higher)

    def spikes(drawn: list[list[float]]) -> float:
        return statistics.fmean(statistics.fmean(d) for d in drawn)

    def best_rate(drawn: list[list[float]]) -> float:
        means = [statistics.fmean(d) for d in drawn]
        return max(means) if higher else min(means)

    return {"sensitivity": sensitivity, "spikes": spikes, "best": best_rate}[measure]


def evaluate(claim: Claim, records: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]],
             sweep: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The claim's row, or ``None`` when the suite ran none of its tasks or strategies."""
    task = next((t for name in claim.tasks for t in tasks if t["task"] == name), None)
    if task is None:
        return None
    higher = task["higher_is_better"]
    lrs = [lr for lr in task["lrs"]
           if scores_of(records, task["task"], claim.strategy, lr)
           and scores_of(records, task["task"], claim.baseline, lr)]
    if not lrs:
        return None
    field = "spikes" if claim.measure == "spikes" else "score"
    mine = [e["metric_mean"] for e in sweep if e["task"] == task["task"]]
    best = (max if higher else min)(mine)
    measure = statistic(claim.measure, best, higher)
    # positive = the claim's way: a lower sensitivity or spike count, or a better best score
    larger_is_better = claim.measure == "best" and higher

    def effect(drawn: list[list[float]]) -> float:
        ours, theirs = measure(drawn[:len(lrs)]), measure(drawn[len(lrs):])
        return ours - theirs if larger_is_better else theirs - ours

    samples = ([scores_of(records, task["task"], claim.strategy, lr, field) for lr in lrs]
               + [scores_of(records, task["task"], claim.baseline, lr, field) for lr in lrs])
    observed = effect(samples)
    low, high = bootstrap_interval(samples, effect)
    answer = "reproduced" if low > 0 else "not reproduced" if high < 0 else "inconclusive"
    return {"strategy": claim.strategy, "paper": claim.paper, "claim": claim.claim,
            "task": task["task"], "measure": claim.measure, "baseline": claim.baseline,
            "effect": observed, "effect_ci95": [low, high], "answer": answer}


def evaluate_all(records: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]],
                 sweep: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every claim the suite can test."""
    rows = [evaluate(claim, records, tasks, sweep) for claim in CLAIMS]
    return [row for row in rows if row is not None]
