"""Run-level diagnosis of recorded histories, built here from synthetic metric streams."""

from __future__ import annotations

import math

import torch

from gradclip.monitor.diagnosis import RunHistory, diagnose_run
from gradclip.monitor.fixes import RunSetting

STEPS = 400
RNN_SGD = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="none", seq_len=10, layers=1)


def noise(count: int = STEPS, scale: float = 0.05, seed: int = 0) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return (1 + scale * torch.randn(count, generator=generator)).tolist()


def learning_losses() -> list[float]:
    return [0.2 * math.exp(-step / 80) * n for step, n in enumerate(noise())]


def stable_norms() -> list[float]:
    return [0.3 * n for n in noise(seed=1)]


def kinds(history: RunHistory, setting: RunSetting = RNN_SGD) -> list[str]:
    return [verdict.kind for verdict in diagnose_run(history, setting)]


def test_a_loss_that_fell_with_bounded_norms_is_healthy_and_says_by_how_much():
    (verdict,) = diagnose_run(RunHistory(learning_losses(), stable_norms()), RNN_SGD)
    assert verdict.kind == "healthy"
    assert verdict.evidence["final"] < 0.1 * verdict.evidence["first"]


def test_a_loss_that_went_nan_is_diverged_whatever_the_gradients_looked_like():
    losses = learning_losses()[:300] + [math.nan] * 100
    verdicts = diagnose_run(RunHistory(losses, stable_norms()), RNN_SGD)
    assert verdicts[0].kind == "diverged"
    assert verdicts[0].evidence["nonfinite_step"] == 301
    assert "healthy" not in [v.kind for v in verdicts]


def test_a_finite_loss_ending_far_above_its_start_is_diverged():
    losses = learning_losses()[:200] + [5.0 * n for n in noise(200)]
    assert kinds(RunHistory(losses, stable_norms(), final_loss=22.6))[0] == "diverged"


def test_a_loss_above_its_start_for_most_of_the_run_is_diverged():
    losses = [1.0] + [2.5 * n for n in noise(STEPS - 1)]
    assert kinds(RunHistory(losses, stable_norms(), final_loss=1.7))[0] == "diverged"


def test_a_diverged_fix_for_an_unclipped_run_says_to_clip_and_names_a_lower_lr():
    losses = learning_losses()[:300] + [math.nan] * 100
    fix = diagnose_run(RunHistory(losses), RNN_SGD)[0].fix
    assert fix.startswith("clip (`gradclip profile`")
    assert "--lr 0.05" in fix


def test_a_diverged_adaptive_clipper_is_told_to_use_a_measured_threshold():
    losses = learning_losses()[:300] + [math.nan] * 100
    setting = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="autoclip:0.1")
    assert "threshold measured on an unclipped start" in diagnose_run(
        RunHistory(losses), setting)[0].fix


def test_a_run_that_learnt_then_ended_far_above_its_best_is_unstable():
    history = RunHistory(learning_losses(), stable_norms(), final_loss=0.15)
    assert kinds(history)[0] == "unstable"


def test_a_flat_loss_at_the_baseline_is_stalled_not_healthy():
    losses = [0.167 * n for n in noise()]
    history = RunHistory(losses, stable_norms(), success=False)
    assert kinds(history) == ["stalled"]


def test_a_stalled_run_clipped_on_most_steps_is_told_its_threshold_is_too_tight():
    losses = [0.167 * n for n in noise()]
    setting = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="norm:0.05")
    history = RunHistory(losses, stable_norms(), clipped=[True] * 350 + [False] * 50)
    verdict = diagnose_run(history, setting)[0]
    assert verdict.kind == "stalled"
    assert "too tight" in verdict.fix and "88%" in verdict.fix


def test_a_gradient_exactly_zero_all_run_under_a_value_clip_is_zeroed_not_vanishing():
    losses = [0.167 * n for n in noise()]
    modules = {"rnn": [0.0] * 8, "head": [0.02 * n for n in noise(8)]}
    profiles = {"rnn": [0.0] * 10}
    setting = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="value:0.001")
    found = kinds(RunHistory(losses, stable_norms(), clipped=[True] * STEPS,
                             module_norms=modules, time_profiles=profiles), setting)
    assert found[0] == "zeroed"
    assert "vanishing" not in found
    assert "clip the norm instead" in diagnose_run(
        RunHistory(losses, module_norms=modules), setting)[0].fix


def test_vanishing_in_time_is_said_with_the_ratio_and_the_reach():
    losses = [0.167 * n for n in noise()]
    profile = [0.5 ** (49 - t) for t in range(50)]
    verdicts = diagnose_run(RunHistory(losses, stable_norms(), time_profiles={"rnn": profile}),
                            RNN_SGD)
    vanishing = next(v for v in verdicts if v.kind == "vanishing")
    assert f"{profile[0] / profile[-1]:.2g}x" in vanishing.explanation
    assert vanishing.evidence["reach"] == 10


def test_no_time_profile_and_no_depth_gap_means_no_vanishing_verdict():
    losses = [0.167 * n for n in noise()]
    modules = {"rnn": [0.3] * 8, "head": [0.5] * 8}
    assert "vanishing" not in kinds(RunHistory(losses, stable_norms(), module_norms=modules))


def test_unclipped_isolated_spikes_in_a_learning_run_are_exploding():
    norms = stable_norms()
    norms[200] = norms[300] = 30.0
    verdict = diagnose_run(RunHistory(learning_losses(), norms), RNN_SGD)[0]
    assert verdict.kind == "exploding"
    assert verdict.evidence["spikes"] == 2


def test_spikes_a_clipper_caught_in_a_learning_run_leave_it_healthy():
    norms = stable_norms()
    norms[200] = 30.0
    setting = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="norm:1.0")
    assert kinds(RunHistory(learning_losses(), norms, clipped=[False] * STEPS), setting) == [
        "healthy"]


def test_a_falling_loss_that_missed_the_tasks_criterion_is_learning_not_healthy():
    verdicts = diagnose_run(RunHistory(learning_losses(), stable_norms(), success=False),
                            RNN_SGD)
    assert [v.kind for v in verdicts] == ["learning"]
    assert "train longer" in verdicts[0].fix


def test_a_lower_validation_loss_after_noisy_passages_is_not_unstable():
    # a text's passages differ: one easy stretch of steps must not make the end look bad
    losses = learning_losses()
    losses[100:120] = [0.001] * 20
    assert kinds(RunHistory(losses, stable_norms(), final_loss=losses[-1] * 1.5)) == ["healthy"]


def test_a_spike_detector_that_skipped_a_fifth_of_the_steps_is_told_to_relax():
    setting = RunSetting(cell="rnn", optimizer="sgd", lr=0.15, clip="spikeskip+norm:1.0")
    history = RunHistory(learning_losses(), stable_norms(),
                         skipped=[i % 5 == 0 for i in range(STEPS)])
    verdict = diagnose_run(history, setting)[0]
    assert verdict.kind == "tight"
    assert "20%" in verdict.explanation and "sigma" in verdict.fix
