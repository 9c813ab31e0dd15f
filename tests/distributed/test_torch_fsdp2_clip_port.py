"""torch's own FSDP2 clipping test, ported to gloo on CPU with gradclip in place of torch.

Our port of ``test/distributed/_composable/fsdp/test_fully_shard_clip_grad_norm_.py``
(PyTorch): a small transformer-shaped model, ``fully_shard`` per block then the root (1-D,
2 processes), and tensor plus sequence parallel on ``tp`` under FSDP2 on ``dp`` (2-D,
4 processes); ten Adam steps per norm type against a reference trained on every ``dp``
rank's input. As there: gradients equal before clipping, every gradient's norm above
``max_norm`` (the clip is not vacuous), the total norm equal to torch's on the reference,
every gradient's norm at most ``max_norm`` after, and changed. Where torch expects one
all-reduce per mesh dimension, gradclip is held to one in all; and where torch skips the
``(Shard(0), Shard(0))`` parameters (strided sharding), nothing is skipped.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import gradclip
from tests.distributed.ranks import assert_ok, collectives_during, run_checks

VOCAB, DIM, SEQUENCE, ITERATIONS = 16, 8, 16, 10
# float32, with tensor-parallel sums in another order than the reference's: ten Adam steps
# later the two differ by a few ulps of the largest gradients.
FLOAT32_STEPS = {"rtol": 1e-4, "atol": 1e-4}


class FeedForwardBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.up = nn.Linear(DIM, 2 * DIM)
        self.down = nn.Linear(2 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class TinyTransformer(nn.Module):
    """Embedding, two residual blocks, a final norm and the output projection."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList(FeedForwardBlock() for _ in range(2))
        self.norm = nn.LayerNorm(DIM)
        self.out = nn.Linear(DIM, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))


def tensor_parallel_plan() -> dict:
    """Sequence parallel around colwise/rowwise pairs, as torch's ``Transformer.parallelize``."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
    )

    plan = {
        "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "out": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
    }
    for i in range(2):
        plan[f"blocks.{i}.norm"] = SequenceParallel()
        plan[f"blocks.{i}.up"] = ColwiseParallel(input_layouts=Shard(1))
        plan[f"blocks.{i}.down"] = RowwiseParallel(output_layouts=Shard(1))
    return plan


def sharded_and_reference(dp_mesh, tp_mesh=None) -> tuple[nn.Module, nn.Module]:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    torch.manual_seed(42)
    model = TinyTransformer()
    reference = TinyTransformer()
    reference.load_state_dict(model.state_dict())
    if tp_mesh is not None:
        parallelize_module(model, tp_mesh, tensor_parallel_plan())
    for block in model.blocks:
        fully_shard(block, mesh=dp_mesh)
    fully_shard(model, mesh=dp_mesh)
    return model, reference


def inputs_of(dp_rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(42 + dp_rank + 1)
    return torch.randint(0, VOCAB, (3, SEQUENCE), generator=generator)


def check_clip_grad_norm(
    max_norm: float, norm_type: float, model: nn.Module, reference: nn.Module, dp_mesh
) -> None:
    """One norm type: ``ITERATIONS`` clipped Adam steps, checked as torch's test checks."""
    def norm_of(t):
        return torch.linalg.vector_norm(t, norm_type)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    dp_size, dp_rank = dp_mesh.size(), dp_mesh.get_local_rank()
    for _ in range(ITERATIONS):
        reference_optimizer.zero_grad()
        # FSDP2 averages over dp: the reference takes the mean over every dp rank's input.
        sum(reference(inputs_of(r)).sum() for r in range(dp_size)).div(dp_size).backward()
        optimizer.zero_grad()
        model(inputs_of(dp_rank)).sum().backward()

        reference_grads = [p.grad.detach().clone() for p in reference.parameters()]
        local_grads = [p.grad.to_local().detach().clone() for p in model.parameters()]
        for reference_grad, param in zip(reference_grads, model.parameters(), strict=True):
            torch.testing.assert_close(param.grad.full_tensor(), reference_grad, **FLOAT32_STEPS)
        for (name, _), reference_grad, local_grad in zip(
            model.named_parameters(), reference_grads, local_grads, strict=True
        ):
            assert norm_of(reference_grad) > max_norm, f"a vacuous clip of {name}"
            assert norm_of(local_grad) > max_norm, f"a vacuous clip of {name}'s shard"

        reference_total = torch.nn.utils.clip_grad_norm_(
            reference.parameters(), max_norm=max_norm, norm_type=norm_type)
        total, collectives = collectives_during(lambda: gradclip.clip_grad_norm_(
            model.parameters(), max_norm=max_norm, norm_type=norm_type, foreach=True))
        assert type(total) is torch.Tensor, "the global norm is an ordinary tensor"
        torch.testing.assert_close(total, reference_total, **FLOAT32_STEPS)
        assert collectives == 1, f"{collectives} collectives (torch: one per mesh dim)"

        for param, grad in zip(reference.parameters(), reference_grads, strict=True):
            assert norm_of(param.grad) <= max_norm * (1 + 1e-5)
            if torch.count_nonzero(grad):
                assert not torch.equal(param.grad, grad)
        for param, grad in zip(model.parameters(), local_grads, strict=True):
            assert norm_of(param.grad.to_local()) <= max_norm * (1 + 1e-5)
            if torch.count_nonzero(grad):
                assert not torch.equal(param.grad.to_local(), grad)
        optimizer.step()
        reference_optimizer.step()


def check_clip_grad_norm_1d() -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dp_mesh = init_device_mesh("cpu", (2,))
    for norm_type in (2.0, 1.0, math.inf):
        model, reference = sharded_and_reference(dp_mesh)
        check_clip_grad_norm(1.0, norm_type, model, reference, dp_mesh)


def check_clip_grad_norm_2d() -> None:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    for norm_type in (2.0, 1.0, 3.0, math.inf):
        model, reference = sharded_and_reference(mesh["dp"], mesh["tp"])
        check_clip_grad_norm(1.0, norm_type, model, reference, mesh["dp"])


def check_degenerate_2d_mesh(shape: tuple[int, int]) -> None:
    """2 x 1 and 1 x 2 meshes: one all-reduce, the reference's norm (3 to 4 before)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", shape, mesh_dim_names=("dp", "tp"))
    model, reference = sharded_and_reference(mesh["dp"], mesh["tp"])
    dp_size = mesh["dp"].size()
    sum(reference(inputs_of(r)).sum() for r in range(dp_size)).div(dp_size).backward()
    model(inputs_of(mesh["dp"].get_local_rank())).sum().backward()
    total, collectives = collectives_during(
        lambda: gradclip.clip_grad_norm_(model.parameters(), 1.0))
    torch.testing.assert_close(total, torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0))
    assert collectives == 1, f"{collectives} collectives"


CHECKS_2_RANKS = {
    "1d": check_clip_grad_norm_1d,
    "2x1": functools.partial(check_degenerate_2d_mesh, (2, 1)),
    "1x2": functools.partial(check_degenerate_2d_mesh, (1, 2)),
}
CHECKS_4_RANKS = {"2d": check_clip_grad_norm_2d}


@pytest.fixture(scope="module")
def outcomes_2(tmp_path_factory):
    return run_checks(CHECKS_2_RANKS, 2, tmp_path_factory.mktemp("port2"), "port2")


@pytest.fixture(scope="module")
def outcomes_4(tmp_path_factory):
    return run_checks(CHECKS_4_RANKS, 4, tmp_path_factory.mktemp("port4"), "port4")


def test_clip_grad_norm_1d_as_torchs_fsdp2_test_checks_it(outcomes_2):
    assert_ok(outcomes_2, "1d")


@pytest.mark.parametrize("shape", ["2x1", "1x2"])
def test_a_degenerate_2d_mesh_costs_one_all_reduce(outcomes_2, shape):
    assert_ok(outcomes_2, shape)


def test_clip_grad_norm_2d_as_torchs_fsdp2_test_checks_it(outcomes_4):
    assert_ok(outcomes_4, "2d")
