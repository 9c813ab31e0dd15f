"""Every clipping strategy under DDP and FSDP2 equals one process on the full batch.

Two gloo processes each take a different half of every batch. DDP and FSDP2 average the
gradients over ranks, so the single-process reference is trained on the *mean* loss of the
full batch: both see the same gradient. One spawn per wrapper runs every check (process
start-up dominates the cost); each test then asserts one recorded outcome.
"""

from __future__ import annotations

import functools
import json
import math
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gradclip
from benchmarks.common import leave_without_finalizing
from tests.distributed import ranks
from tests.distributed.ranks import state_tensors
from tests.distributed.spawn import WORLD_SIZE, free_port

STEPS = 20
SPECS = {
    "norm": "norm:0.5",
    "value": "value:0.02",
    "agc": "agc:0.05",
    "autoclip": "autoclip:quantile=0.5,history_length=8",
    "zclip": "zclip:warmup_steps=3,z_thresh=1.0,max_grad_norm=5.0",
    "adagc": "adagc:warmup_steps=3",
    # Acts from the 20th step on, which is a spike (every 5th batch is ten times larger).
    "spikeskip": "spikeskip:window=19,sigma=1.0",
    "chain": "agc:0.05+spikeskip:window=19,sigma=1.0+zclip:warmup_steps=3,max_grad_norm=5.0",
}
ADAPTIVE = ("autoclip", "zclip", "adagc", "spikeskip", "chain")
WRAPPERS = ("ddp", "fsdp")
TOLERANCE = {"rtol": 1e-10, "atol": 1e-12}


class Recurrent(torch.nn.Module):
    """A tanh RNN read at its last step, the shape of model the application trains."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.RNN(3, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(inputs)
        return self.head(outputs[:, -1])


def make_model() -> Recurrent:
    # float64: twenty steps of float32 rounding in a different order would blur the comparison.
    torch.manual_seed(0)
    return Recurrent().double()


def wrap(model: Recurrent, wrapper: str) -> torch.nn.Module:
    if wrapper == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in (model.rnn, model.head, model):
        fully_shard(layer, mesh=mesh)
    return model


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of 8 sequences; every 5th is ten times larger, a gradient spike."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(8, 6, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(8, 1, generator=generator, dtype=torch.float64)
    return inputs * (10.0 if step % 5 == 4 else 1.0), targets


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def backward(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    torch.nn.functional.mse_loss(model(inputs), targets).backward()


def train_side_by_side(wrapper: str, spec: str, steps: int = STEPS) -> dict:
    """Train the wrapped model on this rank's half and the reference on the whole batch."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model, reference = wrap(make_model(), wrapper), make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    clipper, reference_clipper = gradclip.from_spec(spec), gradclip.from_spec(spec)
    clipped_steps = 0
    for step in range(steps):
        inputs, targets = batch(step)
        optimizer.zero_grad(set_to_none=True)
        reference_optimizer.zero_grad(set_to_none=True)
        backward(model, inputs.chunk(world_size)[rank], targets.chunk(world_size)[rank])
        backward(reference, inputs, targets)
        stats = clipper.clip_(model.named_parameters())
        expected = reference_clipper.clip_(reference.named_parameters())
        assert type(stats.total_norm) is torch.Tensor, "the norm must be an ordinary tensor"
        torch.testing.assert_close(stats.total_norm, expected.total_norm, **TOLERANCE)
        assert type(stats.clipped) is torch.Tensor, "clipped must be an ordinary tensor"
        assert bool(stats.clipped) == bool(expected.clipped), f"clipped differs at step {step}"
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(full(p.grad), q.grad, **TOLERANCE)
        assert bool(stats.skipped) == bool(expected.skipped), f"skipped differs at step {step}"
        clipped_steps += bool(expected.clipped) or bool(expected.skipped)
        optimizer.step()
        reference_optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(full(p.detach()), q.detach(), **TOLERANCE)
    assert clipped_steps > 0 or steps < STEPS, f"{spec} never clipped: the check would prove nothing"
    return {"clipper": clipper, "reference_clipper": reference_clipper}


def assert_same_on_every_rank(state: dict[str, torch.Tensor]) -> None:
    """Each tensor of a ``state_dict`` is bit-identical on every rank (gathered and compared)."""
    for key, value in state.items():
        ranks.assert_same_on_every_rank(value, key)


def check_matches_single_process(wrapper: str, name: str) -> None:
    train_side_by_side(wrapper, SPECS[name])


def check_adaptive_state_identical(wrapper: str, name: str) -> None:
    clippers = train_side_by_side(wrapper, SPECS[name], steps=8)
    state = state_tensors(clippers["clipper"].state_dict())
    assert state, "no adaptive state"
    assert_same_on_every_rank(state)
    for key, value in state_tensors(clippers["reference_clipper"].state_dict()).items():
        torch.testing.assert_close(state[key], value, **TOLERANCE, equal_nan=True, msg=key)


def check_nan_on_one_rank_skips_everywhere(wrapper: str, name: str) -> None:
    """Rank 1 alone meets a NaN (its data for DDP, its gradient shard for FSDP2).

    One healthy step first builds momentum, so that a step on zeroed gradients would still
    move the weights: only a skipped step leaves them unchanged.
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = wrap(make_model(), wrapper)
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        gradclip.from_spec(f"{SPECS[name]},nonfinite=skip"),
    )
    for step in range(2):
        inputs, targets = batch(step)
        inputs = inputs.chunk(world_size)[rank].clone()
        if step == 1 and rank == 1 and wrapper == "ddp":
            inputs[0, 0, 0] = math.nan
        optimizer.zero_grad(set_to_none=True)
        backward(model, inputs, targets.chunk(world_size)[rank])
        if step == 1 and rank == 1 and wrapper == "fsdp":
            next(model.parameters()).grad.to_local().view(-1)[0] = math.nan
        before = [full(p.detach()).clone() for p in model.parameters()]
        optimizer.step()
    assert bool(optimizer.last_stats.skipped), f"rank {rank} did not skip"
    assert optimizer.skipped_steps == 1
    for p, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(full(p.detach()), old), f"rank {rank} changed its weights"


def check_process_group_matches_single_process(wrapper: str, name: str) -> None:
    """Hand-sharded tensors (rows split over ranks) with ``process_group=``: 20 steps equal
    to one process on the whole tensors; adaptive state identical on every rank."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(0)
    full = [torch.randn(8, 5, generator=generator, dtype=torch.float64),
            torch.randn(8, generator=generator, dtype=torch.float64)]
    shards = [torch.nn.Parameter(t.chunk(world_size)[rank].clone()) for t in full]
    reference = [torch.nn.Parameter(t.clone()) for t in full]
    clipper = gradclip.from_spec(SPECS[name])
    clipper.process_group = dist.group.WORLD
    reference_clipper = gradclip.from_spec(SPECS[name])
    clipped_steps = 0
    for step in range(STEPS):
        spike = 10.0 if step % 5 == 4 else 1.0
        grads = [torch.randn(t.shape, generator=generator, dtype=torch.float64) * spike
                 for t in full]
        for shard, whole, grad in zip(shards, reference, grads, strict=True):
            shard.grad, whole.grad = grad.chunk(world_size)[rank].clone(), grad.clone()
        stats, expected = clipper.clip_(shards), reference_clipper.clip_(reference)
        torch.testing.assert_close(stats.total_norm, expected.total_norm, **TOLERANCE)
        assert bool(stats.clipped) == bool(expected.clipped), f"clipped differs at step {step}"
        for shard, whole in zip(shards, reference, strict=True):
            torch.testing.assert_close(shard.grad, whole.grad.chunk(world_size)[rank], **TOLERANCE)
            shard.data -= 0.05 * shard.grad
            whole.data -= 0.05 * whole.grad
        clipped_steps += bool(expected.clipped) or bool(expected.skipped)
    assert clipped_steps > 0, f"{name} never clipped: the check would prove nothing"
    assert_same_on_every_rank(state_tensors(clipper.state_dict()))


CHECKS = {
    **{f"matches_single_process[{name}]": (check_matches_single_process, name) for name in SPECS},
    **{f"adaptive_state[{name}]": (check_adaptive_state_identical, name)
       for name in ADAPTIVE},
    **{f"nan_skip[{name}]": (check_nan_on_one_rank_skips_everywhere, name)
       for name in ("norm", "zclip")},
}
# Hand-sharded tensors need no wrapper: checked once, in the DDP processes.
HAND_SHARDED = {f"process_group[{name}]": (check_process_group_matches_single_process, name)
                for name in SPECS}


def run_checks(rank: int, wrapper: str, port: int, out_dir: str) -> None:
    """Every check in turn on this rank; outcomes (``ok`` or the error) go to a JSON file."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A check that fails on one rank only leaves the other in a collective: time it out.
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    outcomes = {}
    try:
        checks = {**CHECKS, **(HAND_SHARDED if wrapper == "ddp" else {})}
        for check_name, (check, name) in checks.items():
            try:
                check(wrapper, name)
                outcomes[check_name] = "ok"
            except Exception:  # recorded and asserted by the test of that check
                outcomes[check_name] = traceback.format_exc(limit=4)
            dist.barrier()
    finally:
        Path(out_dir, f"{wrapper}-{rank}.json").write_text(json.dumps(outcomes))
        dist.destroy_process_group()
    leave_without_finalizing()  # a gloo thread may otherwise abort the shut-down interpreter


@functools.cache
def outcomes(wrapper: str, out_dir: str) -> dict[str, list[str]]:
    files = [Path(out_dir, f"{wrapper}-{rank}.json") for rank in range(WORLD_SIZE)]
    try:
        mp.spawn(run_checks, args=(wrapper, free_port(), out_dir), nprocs=WORLD_SIZE, join=True)
    except mp.ProcessExitedException:
        # gloo may abort a process while the group is torn down, after every outcome was
        # written (seen rarely on a loaded machine); a crash during the checks is a failure.
        if not all(file.is_file() for file in files):
            raise
    by_rank = [json.loads(file.read_text()) for file in files]
    return {check: [ranks[check] for ranks in by_rank] for check in by_rank[0]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("distributed"))
    return lambda wrapper, check: outcomes(wrapper, out_dir)[check]


def assert_ok(results, wrapper: str, check: str) -> None:
    for rank, outcome in enumerate(results(wrapper, check)):
        assert outcome == "ok", f"{wrapper} rank {rank}:\n{outcome}"


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("name", list(SPECS))
def test_norms_clipped_grads_and_weights_after_20_steps_match_one_process_on_the_full_batch(
    results, wrapper, name
):
    assert_ok(results, wrapper, f"matches_single_process[{name}]")


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_state_is_identical_on_every_rank_and_equals_one_process(results, wrapper, name):
    assert_ok(results, wrapper, f"adaptive_state[{name}]")


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("name", ["norm", "zclip"])
def test_a_nan_on_one_rank_makes_every_rank_skip_the_step(results, wrapper, name):
    assert_ok(results, wrapper, f"nan_skip[{name}]")


@pytest.mark.parametrize("name", list(SPECS))
def test_hand_sharded_tensors_with_process_group_match_one_process_on_whole_tensors(
    results, name
):
    assert_ok(results, "ddp", f"process_group[{name}]")
