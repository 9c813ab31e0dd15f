"""Models, batches and side-by-side training for the multi-dimensional mesh tests.

A ``Block`` is a colwise then a rowwise ``Linear`` (tensor parallel on ``tp``) and a LayerNorm
that tensor parallelism leaves alone (FSDP2 shards it on the ``dp`` sub-mesh, so it is a copy
on every ``tp`` rank). Every test trains a sharded copy and a single-process reference on
the whole batch side by side, in float64, and compares them step by step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

import gradclip
from gradclip.strategies.spec import STRATEGIES
from tests.distributed.ranks import (
    assert_same_on_every_rank,
    assert_state_same_on_every_rank,
    state_tensors,
)

STEPS = 6
TOLERANCE = {"rtol": 1e-10, "atol": 1e-12}
# Thresholds chosen so that every strategy clips on these models within six steps.
MESH_SPECS = {
    "none": "none",
    "norm": "norm:2.0",
    "value": "value:0.8",
    "agc": "agc:0.5",
    "autoclip": "autoclip:quantile=0.5,history_length=4",
    "zclip": "zclip:warmup_steps=2,z_thresh=1.0,max_grad_norm=5.0",
    # The frontier strategies, where this tree has them.
    **({"adagc": "adagc:warmup_steps=2"} if "adagc" in STRATEGIES else {}),
    **({"spikeskip": "spikeskip:window=19,sigma=1.0"} if "spikeskip" in STRATEGIES else {}),
    "chain": "agc:0.5+norm:2.0",
}
NEVER_CLIPS = {"none", "spikeskip"}
# State entries that hold one value per parameter (AdaGC's).
PER_TENSOR_STATE = {"gamma", "seen"}


class Block(nn.Module):
    """``LayerNorm(down(tanh(up(x))))``: 4 -> 8 -> 4."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 8)
        self.down = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.norm(self.down(torch.tanh(self.up(inputs))))


def make(model_type: Callable[[], nn.Module]) -> nn.Module:
    """A float64 ``model_type()`` with the same initial weights on every rank."""
    torch.manual_seed(0)
    return model_type().double()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of 8 rows; every 5th is ten times larger (a gradient spike)."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    spike = 10.0 if step % 5 == 4 else 1.0
    return inputs * spike, targets * spike


def loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(inputs), targets)


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def tensor_parallel_block(mesh) -> nn.Module:
    """A ``Block`` colwise/rowwise on ``mesh["tp"]``, then ``fully_shard`` on ``mesh["dp"]``."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    model = make(Block)
    parallelize_module(model, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
    fully_shard(model, mesh=mesh["dp"])
    return model


def clipper_for(spec: str, process_group=None) -> gradclip.Clipper:
    clipper = gradclip.from_spec(spec)
    clipper.process_group = process_group
    return clipper


def clip(clipper: gradclip.Clipper, named_params, loss_value: torch.Tensor):
    if "loss" in inspect.signature(clipper.clip_).parameters:  # SpikeSkip reads the loss
        return clipper.clip_(named_params, loss=loss_value.detach())
    return clipper.clip_(named_params)


def assert_step_matches(stats, expected, step: int) -> None:
    assert type(stats.total_norm) is torch.Tensor, "the norm must be an ordinary tensor"
    torch.testing.assert_close(stats.total_norm, expected.total_norm, **TOLERANCE)
    assert bool(stats.clipped) == bool(expected.clipped), f"clipped differs at step {step}"
    assert bool(stats.skipped) == bool(expected.skipped), f"skipped differs at step {step}"
    assert_same_on_every_rank(stats.total_norm, f"total norm at step {step}")
    assert_same_on_every_rank(stats.clipped, f"clipped at step {step}")


def train_side_by_side(
    spec: str,
    model: nn.Module,
    reference: nn.Module,
    own: Callable[[nn.Module], Iterator[tuple[str, nn.Parameter]]],
    rows: Callable[[torch.Tensor], torch.Tensor],
    process_group=None,
    before_step: Callable[[], None] = lambda: None,
) -> None:
    """``STEPS`` steps of SGD with momentum on both models, clipped by ``spec``.

    Args:
        spec: the strategy.
        model: the sharded model; ``own(model)`` are the parameters this rank clips.
        reference: the single-process twin; ``own(reference)`` the same parameters.
        rows: this rank's rows of a batch tensor.
        process_group: the clipper's ``process_group`` (the pipeline group).
        before_step: run before each forward (a pipeline stage refreshes its frozen copy).
    """
    clipper, reference_clipper = clipper_for(spec, process_group), clipper_for(spec)
    params = [p for _, p in own(model)]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    clipped_steps = 0
    for step in range(STEPS):
        inputs, targets = batch(step)
        before_step()
        optimizer.zero_grad(set_to_none=True)
        reference_optimizer.zero_grad(set_to_none=True)
        rank_loss = loss(model, rows(inputs), rows(targets))
        rank_loss.backward()
        reference_loss = loss(reference, inputs, targets)
        reference_loss.backward()
        stats = clip(clipper, list(own(model)), reference_loss)
        expected = clip(reference_clipper, list(reference.named_parameters()), reference_loss)
        assert_step_matches(stats, expected, step)
        for (name, p), (_, q) in zip(own(model), own(reference), strict=True):
            torch.testing.assert_close(full(p.grad), q.grad, **TOLERANCE, msg=f"{name} at {step}")
        clipped_steps += bool(expected.clipped)
        optimizer.step()
        reference_optimizer.step()
    for (name, p), (_, q) in zip(own(model), own(reference), strict=True):
        torch.testing.assert_close(full(p.detach()), q.detach(), **TOLERANCE, msg=name)
    assert clipped_steps > 0 or spec.split(":")[0] in NEVER_CLIPS, f"{spec} never clipped"
    expected_state = state_tensors(reference_clipper.state_dict())
    if PER_TENSOR_STATE & set(expected_state):
        # One entry per parameter: a rank keeps those of the parameters it clips (its
        # pipeline stage), equal to the reference's entries for them.
        positions = {id(p): index for index, p in enumerate(reference.parameters())}
        mine = torch.tensor([positions[id(p)] for _, p in own(reference)])
        expected_state = {key: value[mine] if key in PER_TENSOR_STATE else value
                          for key, value in expected_state.items()}
    else:
        assert_state_same_on_every_rank(clipper.state_dict())
    state = state_tensors(clipper.state_dict())
    for key, value in expected_state.items():
        torch.testing.assert_close(state[key], value, **TOLERANCE, equal_nan=True,
                                   msg=lambda text, key=key: f"{key}: {text}")


def world() -> tuple[int, int]:
    return dist.get_rank(), dist.get_world_size()
