"""gradclip in a 🤗 Accelerate custom loop: backward, unscale, clip, step.

Reference: accelerate's own ``Accelerator.clip_grad_norm_`` (accelerate 1.x). Mixed precision
is fp16 where CUDA is there (a real GradScaler to unscale) and bf16 on CPU, where accelerate
applies no fp16 (``Accelerator(mixed_precision="fp16", cpu=True)`` runs in fp32, no scaler).
On CPU the fp16 loss-scaling path is also emulated, as tests/integrations/test_transformers.py
does: the accelerator is handed a CPU GradScaler, which its backward, unscale and optimizer
step then use.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("accelerate")
from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402

import gradclip  # noqa: E402
from gradclip.integrations.accelerate import unscale_and_clip_  # noqa: E402
from tests.distributed.spawn import run_on_two_ranks  # noqa: E402

ON_CUDA = torch.cuda.is_available()
MIXED = "fp16" if ON_CUDA else "bf16"
ROWS, STEPS = 32, 4
# "amp": fp16 on CUDA, bf16 autocast on CPU; "scaler": fp16 loss scaling, emulated on CPU
PRECISIONS = ["amp"] if ON_CUDA else ["amp", "scaler"]

Clip = Callable[[Accelerator, nn.Module, torch.optim.Optimizer], object]


def reset_accelerate() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def new_accelerator(mixed_precision: str = MIXED) -> Accelerator:
    reset_accelerate()
    if mixed_precision == "amp":
        mixed_precision = MIXED
    if mixed_precision == "scaler":
        accelerator = Accelerator(mixed_precision="fp16", cpu=True)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        accelerator.native_amp = True
        return accelerator
    return Accelerator(mixed_precision=mixed_precision, cpu=not ON_CUDA)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    # Accelerator's state is process-wide: no test sees another's (nor the Trainer tests')
    yield
    reset_accelerate()


def batches(rank: int = 0, world_size: int = 1, steps: int = STEPS
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same ``ROWS``-row batches for every world size; rank ``r`` takes rows ``r::N``."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.randn(ROWS, 8, generator=generator) * 10  # gradient norms well above 1
        y = torch.randn(ROWS, 1, generator=generator)
        out.append((x[rank::world_size], y[rank::world_size]))
    return out


def train(accelerator: Accelerator, clip: Clip, data=None) -> dict[str, torch.Tensor]:
    """The loop of docs/integrations.md: backward, clip (unscaling first), step, zero_grad."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    for x, y in data or batches():
        with accelerator.autocast():
            loss = nn.functional.mse_loss(model(x.to(accelerator.device)).float(),
                                          y.to(accelerator.device))
        accelerator.backward(loss)
        clip(accelerator, model, optimizer)
        optimizer.step()
        optimizer.zero_grad()
    return {k: v.detach().cpu().clone() for k, v in
            accelerator.unwrap_model(model).state_dict().items()}


def accelerate_clip(accelerator, model, optimizer):
    return accelerator.clip_grad_norm_(model.parameters(), 1.0)


def gradclip_clip(clipper, accelerator, model, optimizer):
    return unscale_and_clip_(accelerator, optimizer, model, clipper)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_norm_clip_equals_accelerate_clip_grad_norm_to_the_bit(precision):
    expected = train(new_accelerator(precision), accelerate_clip)
    clipper = gradclip.NormClip(1.0)
    clipped = []

    def clip(accelerator, model, optimizer):
        clipped.append(bool(gradclip_clip(clipper, accelerator, model, optimizer).clipped))

    found = train(new_accelerator(precision), clip)
    assert any(clipped)  # the comparison is about clipped steps
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[k], expected[k]) for k in expected)


def test_a_spec_string_and_named_parameters_are_accepted():
    expected = train(new_accelerator(), accelerate_clip)
    found = train(new_accelerator(), lambda a, m, o: unscale_and_clip_(
        a, o, m.named_parameters(), "norm:1.0"))
    assert all(torch.equal(found[k], expected[k]) for k in expected)


@pytest.mark.parametrize("clipper", [
    gradclip.NormClip(1.0, nonfinite="skip"),
    gradclip.SpikeSkip(nonfinite="skip"),
], ids=["norm-skip", "spikeskip"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_nonfinite_skipped_step_leaves_weights_and_optimizer_state_untouched(clipper,
                                                                               precision):
    data = batches()
    data[2] = (torch.full_like(data[2][0], math.nan), data[2][1])  # a non-finite step
    seen: list[tuple[dict, dict, bool]] = []

    def clip(accelerator, model, optimizer):
        # the state before this step's clip: the previous step's optimizer.step() is done
        before = (copy.deepcopy(optimizer.state_dict()), copy.deepcopy(model.state_dict()))
        stats = unscale_and_clip_(accelerator, optimizer, model, clipper)
        seen.append((*before, bool(stats.skipped)))

    final = train(new_accelerator(precision), clip, data)
    assert [skipped for _, _, skipped in seen] == [False, False, True, False]
    (optimizer_before, weights_before, _), (optimizer_after, weights_after, _) = seen[2:]
    assert_same(optimizer_after, optimizer_before)
    assert_same(weights_after, weights_before)
    assert all(torch.isfinite(value).all() for value in final.values())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_finite_spike_skipped_by_spikeskip_leaves_the_step_out(precision):
    # finite gradients, so under fp16 the scaler finds no inf: the skip is gradclip's alone
    data = batches(steps=26)
    data[24] = (data[24][0], data[24][1] * 1000)  # targets far off: a gradient spike
    clipper = gradclip.SpikeSkip(window=19)
    seen: list[tuple[dict, dict, bool]] = []

    def clip(accelerator, model, optimizer):
        before = (copy.deepcopy(optimizer.state_dict()), copy.deepcopy(model.state_dict()))
        stats = unscale_and_clip_(accelerator, optimizer, model, clipper)
        seen.append((*before, bool(stats.skipped)))

    train(new_accelerator(precision), clip, data)
    assert [index for index, (_, _, skipped) in enumerate(seen) if skipped] == [24]
    (optimizer_before, weights_before, _), (optimizer_after, weights_after, _) = seen[24:]
    assert_same(optimizer_after, optimizer_before)
    assert_same(weights_after, weights_before)
    assert optimizer_after["state"][0]["step"] == 24  # the other 24 steps did step


def assert_same(found, expected) -> None:
    """Equal to the bit, tensors and plain values alike, at any depth."""
    if isinstance(expected, dict):
        assert found.keys() == expected.keys()
        for key in expected:
            assert_same(found[key], expected[key])
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(found, expected)
    else:
        assert found == expected


def test_it_refuses_to_clip_between_micro_batches():
    reset_accelerate()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = accelerator.prepare(nn.Linear(2, 1))
    with accelerator.accumulate(model):  # the first of two micro-batches
        assert not accelerator.sync_gradients
        with pytest.raises(RuntimeError, match="sync_gradients"):
            unscale_and_clip_(accelerator, None, model, "norm:1.0")


def _two_rank_loop(out: Path, rank: int, world_size: int) -> None:
    # what `accelerate launch` (torchrun) sets; the gloo group is spawn.py's
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    accelerator = new_accelerator("no")
    assert accelerator.num_processes == world_size
    weights = train(accelerator, functools.partial(gradclip_clip, gradclip.NormClip(1.0)),
                    batches(rank, world_size))
    torch.save(weights, out / f"rank{rank}.pt")


def test_two_processes_give_the_weights_of_one(tmp_path):
    run_on_two_ranks(functools.partial(_two_rank_loop, tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    one = train(new_accelerator("no"),
                functools.partial(gradclip_clip, gradclip.NormClip(1.0)))
    # every rank holds the same weights; the one-process loop sums the rows in another order
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in one)
    for key in one:
        torch.testing.assert_close(ranks[0][key], one[key], rtol=1e-5, atol=1e-6)
