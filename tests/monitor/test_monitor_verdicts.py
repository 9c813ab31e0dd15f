"""Health verdicts on constructed cases: spike, growth, vanishing in time and depth, healthy."""

from __future__ import annotations

import torch
from torch import nn

from gradclip import GradientMonitor
from gradclip.monitor.verdicts import (
    VerdictRules,
    depth_verdict,
    growth_verdict,
    signal_reach,
    spike_verdict,
    time_verdicts,
)

RULES = VerdictRules()


def stable_norms(count: int = 50) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    return (1.0 + 0.1 * torch.rand(count, generator=generator)).tolist()


def test_a_norm_far_above_the_running_median_is_an_exploding_spike():
    verdict = spike_verdict([40.0], stable_norms(), RULES)
    assert verdict.kind == "exploding"
    assert verdict.evidence["peak"] == 40.0


def test_ordinary_fluctuation_is_not_a_spike():
    assert spike_verdict([1.08], stable_norms(), RULES) is None


def test_a_spike_needs_enough_history_to_compare_with():
    assert spike_verdict([40.0], stable_norms(RULES.min_history - 1), RULES) is None


def test_geometric_growth_over_the_window_is_exploding():
    history = [1.1 ** step for step in range(100)]
    assert growth_verdict(history, RULES).kind == "exploding"


def test_flat_history_is_not_growth():
    assert growth_verdict(stable_norms(100), RULES) is None


def test_gradient_falling_towards_early_time_steps_is_vanishing():
    profile = [0.5 ** (30 - t) for t in range(31)]
    (verdict,) = time_verdicts({"rnn": profile}, RULES)
    assert verdict.kind == "vanishing"
    assert verdict.evidence["reach"] == signal_reach(profile, RULES.vanishing_ratio)


def test_gradient_growing_towards_early_time_steps_is_exploding():
    profile = [2.0 ** (30 - t) for t in range(31)]
    (verdict,) = time_verdicts({"rnn": profile}, RULES)
    assert verdict.kind == "exploding"


def test_signal_reach_counts_final_steps_within_the_ratio_of_the_last():
    assert signal_reach([1e-9, 1e-4, 0.01, 0.5, 1.0], 1e-3) == 3


def test_first_module_orders_of_magnitude_below_the_last_is_vanishing():
    verdict = depth_verdict({"layer0": 1e-6, "layer1": 1e-3, "head": 1.0}, RULES)
    assert verdict.kind == "vanishing"
    assert verdict.evidence["first_module"] == "layer0"


def test_first_module_orders_of_magnitude_above_the_last_is_exploding():
    verdict = depth_verdict({"layer0": 1e4, "head": 1.0}, RULES)
    assert verdict.kind == "exploding"


def test_comparable_module_norms_are_not_vanishing():
    assert depth_verdict({"layer0": 0.2, "head": 1.0}, RULES) is None


def train_steps(model: nn.Module, monitor: GradientMonitor, inputs: torch.Tensor,
                steps: int, final_scale: float = 1.0):
    report = None
    for step in range(steps):
        model.zero_grad(set_to_none=True)
        scale = final_scale if step == steps - 1 else 1.0
        (model(inputs).square().mean() * scale).backward()
        report = monitor.step()
    return report


def test_monitor_reports_a_sudden_gradient_spike_as_exploding():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    monitor = GradientMonitor(model)
    report = train_steps(model, monitor, torch.randn(16, 4), steps=20, final_scale=1000.0)
    assert report.verdict.kind == "exploding"
    assert "spiked" in report.verdict.explanation


def test_monitor_finds_a_stable_small_network_healthy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    monitor = GradientMonitor(model)
    report = train_steps(model, monitor, torch.randn(16, 4), steps=20)
    assert [v.kind for v in report.verdicts] == ["healthy"]


class DeepTanhRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(1, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(inputs)[0][:, -1])


def test_monitor_reports_a_deep_tanh_rnn_at_long_sequences_as_vanishing():
    torch.manual_seed(0)
    model = DeepTanhRNN()
    monitor = GradientMonitor(model)
    report = train_steps(model, monitor, torch.randn(8, 200, 1), steps=1)
    assert report.verdict.kind == "vanishing"
    assert report.time_profiles["rnn"][0] < 1e-3 * report.time_profiles["rnn"][-1]
    assert "use a gated cell (nn.LSTM or nn.GRU" in report.verdict.fix
