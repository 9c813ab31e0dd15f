"""GradientMonitor statistics against hand computation, non-finite origin, laziness, no syncs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradclip import ClipStats, GradientMonitor
from tests.contracts.sync_guard import forbid_host_sync


def two_layer_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def backward(model: nn.Module, scale: float = 1.0) -> None:
    model.zero_grad(set_to_none=True)
    inputs = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    (model(inputs).square().sum() * scale).backward()


def clip_stats(total_norm: float, clipped: bool, threshold: float = 1.0) -> ClipStats:
    return ClipStats(torch.tensor(total_norm), torch.tensor(threshold), torch.tensor(clipped),
                     torch.tensor(False))


def test_parameter_norms_are_the_l2_norms_of_each_gradient():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    report = monitor.step()
    for name, parameter in model.named_parameters():
        assert report.parameter_norms[name] == pytest.approx(parameter.grad.norm().item(),
                                                             rel=1e-6)


def test_module_norm_is_the_norm_of_its_parameters_gradients_together():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    report = monitor.step()
    expected = torch.cat([model[2].weight.grad.reshape(-1), model[2].bias.grad]).norm().item()
    assert list(report.module_norms) == ["0", "2"]
    assert report.module_norms["2"] == pytest.approx(expected, rel=1e-6)


def test_global_norm_is_the_norm_of_all_gradients_as_one_vector():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    report = monitor.step()
    everything = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert report.global_norm == pytest.approx(everything.norm().item(), rel=1e-6)


def test_global_norm_is_the_clippers_pre_clip_norm_when_stats_are_given():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    report = monitor.step(clip_stats(123.0, True))
    assert report.global_norm == pytest.approx(123.0)
    assert report.measured_norm != pytest.approx(123.0)
    assert report.threshold == pytest.approx(1.0)


def test_update_ratio_measures_the_optimizer_step_between_two_calls():
    model = two_layer_model()
    monitor = GradientMonitor(model, update_every=1)
    backward(model)
    monitor.step()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        model[0].weight.add_(0.5)
    backward(model)
    report = monitor.step()
    weight = before["0.weight"]
    assert report.update_ratios["0.weight"] == pytest.approx(
        (0.5 * torch.ones_like(weight)).norm().item() / weight.norm().item(), rel=1e-6)
    assert report.update_ratios["2.bias"] == 0.0
    all_weights = torch.cat([w.reshape(-1) for w in before.values()])
    assert report.update_ratio == pytest.approx(
        0.5 * math.sqrt(weight.numel()) / all_weights.norm().item(), rel=1e-6)


def test_every_step_reports_but_the_update_ratio_is_measured_every_10th_by_default():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=1)
    assert monitor.update_every == 10
    steps = []
    for _ in range(25):
        backward(model)
        with torch.no_grad():
            model[0].weight.add_(0.01)
        steps.append(monitor.step().update_ratio_step)
    assert steps[:9] == [None] * 9
    assert steps[9:20] == [10] * 10 + [20]
    assert steps[-1] == 20


@pytest.mark.parametrize(("every", "expected"), [(1, 10), (3, 12), (10, 10), (50, 50)])
def test_default_update_every_is_a_multiple_of_every_of_at_least_10(every, expected):
    assert GradientMonitor(two_layer_model(), every=every).update_every == expected


@pytest.mark.parametrize("bad", [0, 3, True, 2.0])
def test_update_every_must_be_a_positive_multiple_of_every(bad):
    with pytest.raises(ValueError, match="update_every"):
        GradientMonitor(two_layer_model(), every=2, update_every=bad)


def test_first_report_has_no_update_ratio_without_an_earlier_snapshot():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=1)
    backward(model)
    assert monitor.step().update_ratio is None


def test_clip_fraction_is_the_share_of_steps_the_clipper_changed():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=4)
    for clipped in (True, False, True, True):
        backward(model)
        report = monitor.step(clip_stats(2.0, clipped))
    assert report.clip_fraction == pytest.approx(0.75)


def test_clip_fraction_is_none_without_clip_stats():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    assert monitor.step().clip_fraction is None


def test_only_every_nth_step_returns_a_report():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=3)
    results = []
    for _ in range(6):
        backward(model)
        results.append(monitor.step())
    assert [r is not None for r in results] == [False, False, True, False, False, True]
    assert results[-1].step == 6


def test_nonfinite_names_the_parameter_and_step_where_it_first_appeared():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=5)
    for step in range(1, 6):
        model.zero_grad(set_to_none=True)
        inputs = torch.randn(5, 3)
        weight = model[0].weight
        handle = (weight.register_hook(lambda grad: grad * math.nan) if step >= 3 else None)
        model(inputs).sum().backward()
        if handle is not None:
            handle.remove()
        if step == 4:
            model[2].bias.grad.fill_(math.inf)
        report = monitor.step()
    assert report.first_nonfinite.step == 3
    assert report.first_nonfinite.parameters == ("0.weight",)
    assert report.nonfinite_steps == 3
    assert report.verdict.kind == "non-finite"
    assert "0.weight" in report.verdict.explanation


def test_nonfinite_origin_is_the_first_gradient_computed_by_backward():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    model(torch.randn(5, 3)).sum().mul(math.nan).backward()
    report = monitor.step()
    assert len(report.first_nonfinite.parameters) == 4
    # backward reaches the output layer first
    assert report.first_nonfinite.parameters[0].startswith("2.")


def test_step_never_reads_a_tensor_on_the_host():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=2, update_every=2)  # the weight snapshot included
    backward(model)
    with forbid_host_sync():
        monitor.step(clip_stats(1.0, False))   # not a reporting step
        report = monitor.step(clip_stats(3.0, True))  # a reporting step, report not read
    assert report is not None


def test_time_profile_of_an_nn_rnn_is_the_gradient_norm_reaching_each_input_step():
    torch.manual_seed(0)
    rnn, head = nn.RNN(2, 8, batch_first=True), nn.Linear(8, 1)
    model = nn.ModuleDict({"rnn": rnn, "head": head})
    monitor = GradientMonitor(model)
    inputs = torch.randn(4, 6, 2, requires_grad=True)
    outputs, _ = rnn(inputs)
    head(outputs[:, -1]).sum().backward()
    profile = monitor.step().time_profiles["rnn"]
    expected = inputs.grad.norm(dim=(0, 2))
    assert profile == pytest.approx(expected.tolist(), rel=1e-5)


def test_watched_hidden_states_give_the_full_gradient_of_each_state():
    torch.manual_seed(0)
    cell, head = nn.RNNCell(2, 8), nn.Linear(8, 1)
    model = nn.ModuleDict({"cell": cell, "head": head})
    monitor = GradientMonitor(model)
    inputs, state, states = torch.randn(5, 4, 2), torch.zeros(4, 8), []
    for step in range(5):
        state = cell(inputs[step], state)
        states.append(state)
    for state in states:
        state.retain_grad()
    monitor.watch_hidden_states(states, name="cell")
    head(states[-1]).sum().backward()
    profile = monitor.step().time_profiles["cell"]
    assert profile == pytest.approx([s.grad.norm().item() for s in states], rel=1e-5)


def test_time_profiles_are_recorded_only_for_reporting_steps():
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.GRU(2, 4, batch_first=True)})
    monitor = GradientMonitor(model, every=2, profile_every=2)
    for _ in range(2):
        model.zero_grad()
        inputs = torch.randn(3, 7, 2, requires_grad=True)
        model["rnn"](inputs)[0].sum().backward()
        report = monitor.step()
    # the report covers step 2 alone: step 1 ran without the hooks recording
    assert report.time_profiles["rnn"] == pytest.approx(inputs.grad.norm(dim=(0, 2)).tolist(),
                                                        rel=1e-5)


def test_time_profiles_at_every_1_are_taken_on_the_first_step_then_every_10th():
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.GRU(2, 4, batch_first=True)})
    monitor = GradientMonitor(model, every=1)
    assert monitor.profile_every == 10
    recorded = []
    for _ in range(21):
        model.zero_grad()
        inputs = torch.randn(3, 7, 2, requires_grad=True)
        model["rnn"](inputs)[0].sum().backward()
        profile = monitor.step().time_profiles["rnn"]
        recorded.append(profile == pytest.approx(inputs.grad.norm(dim=(0, 2)).tolist(),
                                                 rel=1e-5))
    assert [i + 1 for i, fresh in enumerate(recorded) if fresh] == [1, 10, 20]


def test_report_summary_names_every_module_and_the_verdict():
    model = two_layer_model()
    monitor = GradientMonitor(model)
    backward(model)
    text = str(monitor.step())
    assert "global grad norm" in text
    assert "HEALTHY" in text
    assert all(f"    {name}" in text for name in ("0", "2"))


def test_every_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="every must be a positive integer"):
        GradientMonitor(two_layer_model(), every=0)


def test_a_model_without_trainable_parameters_is_rejected():
    with pytest.raises(ValueError, match="no parameters"):
        GradientMonitor(nn.Tanh())


def test_report_on_demand_covers_a_nan_step_between_reporting_steps():
    model = two_layer_model()
    monitor = GradientMonitor(model, every=50)
    backward(model)
    monitor.step()
    backward(model, scale=math.nan)
    assert monitor.step() is None
    report = monitor.report()
    assert report.step == 2
    assert report.verdict.kind == "non-finite"


def test_report_on_demand_before_any_step_is_none():
    assert GradientMonitor(two_layer_model()).report() is None


def test_time_profiles_of_micro_batches_with_different_lengths_add_up_step_by_step():
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.RNN(2, 4, batch_first=True)})
    monitor = GradientMonitor(model)
    expected = torch.zeros(7, dtype=torch.float64)
    for steps in (7, 4):
        inputs = torch.randn(3, steps, 2, requires_grad=True)
        model["rnn"](inputs)[0].sum().backward()
        expected[:steps] += inputs.grad.double().square().sum(dim=(0, 2))
    profile = monitor.step().time_profiles["rnn"]
    assert profile == pytest.approx(expected.sqrt().tolist(), rel=1e-6)
