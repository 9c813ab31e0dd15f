"""AutoClip: parity with the autoclip package (0.2.1) QuantileClip(global_threshold=True)."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip

autoclip_torch = pytest.importorskip("autoclip.torch")


def norm_sequence(steps, seed):
    """Gradient scales: a drifting log-normal walk with occasional 50x spikes."""
    generator = torch.Generator().manual_seed(seed)
    level = torch.cumsum(torch.randn(steps, generator=generator) * 0.05, 0)
    scales = torch.exp(level + 0.3 * torch.randn(steps, generator=generator))
    spikes = torch.rand(steps, generator=generator) < 0.05
    return torch.where(spikes, scales * 50, scales), generator


def make_params(seed):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (6,), (3, 6), (3,)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def set_grads(params_pairs, scale, generator):
    for ours, theirs in params_pairs:
        grad = torch.randn(ours.shape, generator=generator) * scale
        ours.grad = grad.clone()
        theirs.grad = grad.clone()


@pytest.mark.parametrize("quantile", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("history_length", [None, 37])
def test_autoclip_matches_reference_quantileclip_over_300_steps_with_spikes(quantile, history_length):
    torch.manual_seed(0)
    ours_params, theirs_params = make_params(1), make_params(1)
    # history_length=None keeps everything; the reference needs a length: one beyond the run.
    steps = 300
    reference = autoclip_torch.QuantileClip(
        theirs_params, quantile=quantile, history_length=history_length or steps + 1,
        global_threshold=True,
    )
    clipper = gradclip.AutoClip(quantile=quantile, history_length=history_length)
    scales, generator = norm_sequence(steps, seed=2)
    for step in range(steps):
        set_grads(list(zip(ours_params, theirs_params, strict=True)), scales[step], generator)
        expected_threshold = (
            math.inf if step == 0
            else torch.quantile(reference.state["global_history"], quantile)
        )
        stats = clipper.clip_(ours_params)
        reference.step()
        assert torch.equal(stats.threshold, torch.as_tensor(expected_threshold)), step
        assert torch.equal(stats.total_norm, reference.state["global_history"][-1]), step
        for ours, theirs in zip(ours_params, theirs_params, strict=True):
            assert torch.equal(ours.grad, theirs.grad), step


def test_autoclip_does_not_clip_the_first_step():
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 1e6)
    stats = gradclip.AutoClip(quantile=0.0).clip_([param])
    assert math.isinf(stats.threshold) and not stats.clipped
    assert torch.equal(param.grad, torch.full((3,), 1e6))


def test_autoclip_ring_buffer_keeps_only_the_last_history_length_norms():
    clipper = gradclip.AutoClip(quantile=1.0, history_length=3)
    param = torch.nn.Parameter(torch.ones(1))
    for norm in [100.0, 1.0, 2.0, 3.0]:
        param.grad = torch.tensor([norm])
        clipper.clip_([param])
    # The 100 has left the window: the maximum of the last three is 3.
    assert clipper.threshold() == 3.0


def test_autoclip_unbounded_history_grows_by_doubling_and_keeps_every_norm():
    clipper = gradclip.AutoClip(quantile=1.0)
    param = torch.nn.Parameter(torch.ones(1))
    steps = gradclip.strategies.autoclip.INITIAL_CAPACITY + 5
    for step in range(steps):
        param.grad = torch.tensor([1000.0 if step == 0 else 1.0])
        clipper.clip_([param])
    assert clipper.history.numel() == 2 * gradclip.strategies.autoclip.INITIAL_CAPACITY
    assert clipper.threshold() == 1000.0


def test_autoclip_history_tensor_is_not_reallocated_between_growths():
    clipper = gradclip.AutoClip(quantile=0.5, history_length=10)
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.ones(2)
    clipper.clip_([param])
    storage = clipper.history.data_ptr()
    for _ in range(25):
        param.grad = torch.ones(2)
        clipper.clip_([param])
    assert clipper.history.data_ptr() == storage


def test_autoclip_keeps_a_nonfinite_norm_out_of_its_history():
    clipper = gradclip.AutoClip(quantile=1.0, nonfinite="skip")
    param = torch.nn.Parameter(torch.ones(2))
    for grad in ([3.0, 4.0], [math.nan, 1.0], [0.6, 0.8]):
        param.grad = torch.tensor(grad)
        stats = clipper.clip_([param])
    assert clipper.threshold() == 5.0
    assert not stats.skipped and int(clipper.recorded) == 2


@pytest.mark.parametrize(
    "kwargs", [{"quantile": -0.1}, {"quantile": 1.5}, {"history_length": 0}, {"history_length": 2.5}]
)
def test_autoclip_rejects_out_of_range_hyperparameters_naming_them(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=name) as error:
        gradclip.AutoClip(**kwargs)
    assert repr(value) in str(error.value)
