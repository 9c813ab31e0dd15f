"""SpikeSkip: OLMo-core's skip-step rule, on the device, against a transcription of it."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip


class OlmoCoreRule:
    """A transcription of OLMo-core's ``SkipStepOptimizer.get_step_factor`` (commit 067267c):
    Python lists of the last ``window + 1`` values, ``std_mean`` of the previous ones."""

    def __init__(self, window: int, sigma: float) -> None:
        self.window, self.sigma = window, sigma
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []

    def _append(self, history: list[torch.Tensor], value: torch.Tensor) -> None:
        history.append(value)
        while len(history) > self.window + 1:
            history.pop(0)

    def _z(self, history: list[torch.Tensor]) -> torch.Tensor:
        std, mean = torch.std_mean(torch.stack(history[:-1]))
        return (history[-1] - mean).abs().div(std)

    def skips(self, loss: torch.Tensor | None, grad_norm: torch.Tensor) -> bool:
        self._append(self.grad_norms, grad_norm)
        if loss is not None:
            self._append(self.losses, loss)
        held = self.losses if loss is not None else self.grad_norms
        if len(held) < max(20, self.window // 2):
            return False
        z_scores = [self._z(self.grad_norms)] + ([self._z(self.losses)] if loss is not None else [])
        return not all(bool(z <= self.sigma) for z in z_scores)


def spiky_step(generator: torch.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A gradient and a loss; norm spikes every 37 steps, loss spikes every 53."""
    grad = torch.randn(6, generator=generator, dtype=torch.float64)
    grad = grad * (1 + 0.3 * torch.rand((), generator=generator, dtype=torch.float64))
    loss = 2 + 0.1 * torch.randn((), generator=generator, dtype=torch.float64)
    if step % 37 == 30:
        grad = grad * 20
    if step % 53 == 40:
        loss = loss + 5
    return grad, loss


@pytest.mark.parametrize("with_loss", [True, False], ids=["loss and norm", "norm only"])
@pytest.mark.parametrize(("window", "sigma"), [(19, 3.0), (32, 3.0), (64, 6.0), (128, 6.0), (40, 2.0)])
def test_spikeskip_matches_olmo_core_rule_over_400_steps_with_spikes(window, sigma, with_loss):
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    clipper, reference = gradclip.SpikeSkip(window, sigma), OlmoCoreRule(window, sigma)
    generator = torch.Generator().manual_seed(window)
    skipped_steps = 0
    for step in range(400):
        grad, loss = spiky_step(generator, step)
        param.grad = grad.clone()
        stats = clipper.clip_([param], loss=loss if with_loss else None)
        expected = reference.skips(loss if with_loss else None, grad.norm())
        assert bool(stats.skipped) == expected, f"step {step}"
        assert torch.equal(param.grad, torch.zeros_like(grad) if expected else grad), f"step {step}"
        skipped_steps += expected
    assert skipped_steps > 0, "no step was skipped: the check would prove nothing"


@pytest.mark.parametrize(("ordinary", "skipped"), [(30, False), (31, True)])
def test_nothing_is_skipped_before_the_history_holds_max_20_window_half_values(ordinary, skipped):
    clipper = gradclip.SpikeSkip(window=64)  # acts from the 32nd value on
    param = torch.nn.Parameter(torch.zeros(3))
    for step in range(ordinary):
        param.grad = torch.ones(3) * (1.0 + 0.01 * step)
        assert not clipper.clip_([param]).skipped
    param.grad = torch.ones(3) * 1000.0
    assert bool(clipper.clip_([param]).skipped) == skipped


def test_a_nonfinite_value_is_skipped_but_not_recorded():
    clipper = gradclip.SpikeSkip(window=19)
    param = torch.nn.Parameter(torch.zeros(3))
    for step in range(25):
        param.grad = torch.ones(3) * (1.0 + 0.01 * step)
        clipper.clip_([param], loss=torch.tensor(1.0 + 0.01 * step))
    history = clipper.state["loss_history"].clone()
    param.grad = torch.ones(3)
    stats = clipper.clip_([param], loss=torch.tensor(math.nan))
    assert stats.skipped and torch.equal(param.grad, torch.zeros(3))
    assert torch.equal(clipper.state["loss_history"], history)
    param.grad = torch.ones(3) * 1.25
    assert not clipper.clip_([param], loss=torch.tensor(1.25)).skipped


def test_clipped_optimizer_skips_the_step_and_hands_the_loss_over():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = gradclip.ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                          gradclip.SpikeSkip(window=19, sigma=3.0))
    for step in range(30):
        optimizer.zero_grad()
        loss = model(torch.full((4, 3), 0.1 * (step % 3))).pow(2).mean() + 1.0
        if step == 29:
            loss = loss + 50.0  # the same gradient, a spike of the loss alone
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.step(loss=loss.detach())
    assert optimizer.last_stats.skipped and optimizer.skipped_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_a_window_too_short_for_the_rule_to_ever_act_is_refused():
    with pytest.raises(ValueError, match="window must be an integer in 19"):
        gradclip.SpikeSkip(window=10)
    with pytest.raises(ValueError, match="sigma"):
        gradclip.SpikeSkip(sigma=0.0)
