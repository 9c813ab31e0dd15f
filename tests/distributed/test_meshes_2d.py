"""2-D FSDP x TP (dp=2 x tp=2, 4 gloo processes) equals one process on the full batch.

The block is colwise then rowwise tensor parallel on ``tp`` and ``fully_shard``-ed on ``dp``,
so its parameters carry ``(_StridedShard(0), Shard(0))``, ``(Shard(0), Shard(1))`` and
``(Shard(0), Replicate())``, and its LayerNorm lives on the ``dp`` sub-mesh: the placements
that made gradclip's norm local before (``_StridedShard`` is no ``Shard`` subclass in torch
2.13) and the copies it must count once. One spawn runs every check.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import gradclip
from gradclip.distributed import is_sharding
from tests.distributed.meshes import (
    MESH_SPECS,
    TOLERANCE,
    Block,
    batch,
    full,
    loss,
    make,
    tensor_parallel_block,
    train_side_by_side,
)
from tests.distributed.ranks import (
    assert_ok,
    assert_same_on_every_rank,
    collectives_during,
    run_checks,
)

NORM_TYPES = [1.0, 2.0, 3.0, math.inf]


@functools.cache
def mesh_2d():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))


def dp_rows(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's rows: ranks of one ``tp`` group see the same rows (their ``dp`` half)."""
    return tensor.chunk(2)[mesh_2d().get_local_rank("dp")]


def side_by_side_grads() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The 2-D model and its reference after one backward on batch 4 (a spike)."""
    model, reference = tensor_parallel_block(mesh_2d()), make(Block)
    inputs, targets = batch(4)
    loss(model, dp_rows(inputs), dp_rows(targets)).backward()
    loss(reference, inputs, targets).backward()
    return model, reference


def assert_same_grads(model, reference) -> None:
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(full(p.grad), q.grad, **TOLERANCE, msg=name)


def check_every_placement_of_fully_shard_and_parallelize_module_is_recognised() -> None:
    from torch.distributed.tensor import DTensor, Partial, Shard

    model, _ = side_by_side_grads()
    placements = {p for param in model.parameters()
                  for p in (*param.placements, *param.grad.placements)}
    kinds = {type(p).__name__ for p in placements}
    assert kinds == {"_StridedShard", "Shard", "Replicate"}, kinds
    for placement in placements:
        assert is_sharding(placement) == (type(placement).__name__ != "Replicate"), placement
    # A Partial placement holds summands: reduced before the norm, never taken as a shard.
    assert not is_sharding(Partial())
    piece = torch.arange(6, dtype=torch.float64).reshape(3, 2) + 10 * mesh_2d().get_rank()
    partial = DTensor.from_local(piece, mesh_2d(), [Partial(), Shard(1)])
    expected = partial.full_tensor().norm()
    torch.testing.assert_close(gradclip.get_total_norm([partial]), expected, **TOLERANCE)


def check_clip_grad_norm_matches_torch_on_one_process_for_every_norm_type() -> None:
    for norm_type in NORM_TYPES:
        model, reference = side_by_side_grads()
        total = gradclip.clip_grad_norm_(model.parameters(), 0.5, norm_type)
        expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5, norm_type)
        assert type(total) is torch.Tensor
        torch.testing.assert_close(total, expected, **TOLERANCE, msg=f"p={norm_type}")
        assert_same_on_every_rank(total, f"the {norm_type}-norm")
        assert_same_grads(model, reference)


def check_value_per_tensor_and_agc_clipping_match_one_process() -> None:
    model, reference = side_by_side_grads()
    gradclip.clip_grad_value_(model.parameters(), 0.3)
    torch.nn.utils.clip_grad_value_(reference.parameters(), 0.3)
    assert_same_grads(model, reference)

    model, reference = side_by_side_grads()
    norms = gradclip.clip_grad_norm_per_tensor_(model.parameters(), 0.4)
    expected = gradclip.clip_grad_norm_per_tensor_(reference.parameters(), 0.4)
    torch.testing.assert_close(norms, expected, **TOLERANCE)
    assert_same_grads(model, reference)

    # The rowwise weight shards the input dim: its unit (row) norms need the tp reduction.
    model, reference = side_by_side_grads()
    total = gradclip.adaptive_clip_grad_(model.parameters(), 0.05)
    expected = gradclip.adaptive_clip_grad_(reference.parameters(), 0.05)
    torch.testing.assert_close(total, expected, **TOLERANCE)
    assert_same_grads(model, reference)


def check_strategy_matches_one_process(name: str) -> None:
    train_side_by_side(MESH_SPECS[name], tensor_parallel_block(mesh_2d()), make(Block),
                       own=lambda m: m.named_parameters(), rows=dp_rows)


def check_the_norm_costs_one_all_reduce() -> None:
    model, reference = side_by_side_grads()
    grads = [p.grad for p in model.parameters()]
    for norm_type in (2.0, math.inf):
        _, count = collectives_during(lambda p=norm_type: gradclip.get_total_norm(grads, p))
        assert count == 1, f"p={norm_type}: {count} collectives"
    frozen = torch.ones(3, dtype=torch.float64)  # an ordinary tensor: this rank's own
    total, count = collectives_during(lambda: gradclip.get_total_norm([*grads, frozen]))
    assert count == 1, count
    expected = torch.cat([*(p.grad.flatten() for p in reference.parameters()), frozen]).norm()
    torch.testing.assert_close(total, expected, **TOLERANCE)
    _, count = collectives_during(lambda: gradclip.clip_grad_norm_(model.parameters(), 0.5))
    assert count == 1, count
    _, count = collectives_during(lambda: gradclip.NormClip(0.5).clip_(model.parameters()))
    assert count == 1, count
    _, torch_count = collectives_during(
        lambda: torch.nn.utils.get_total_norm(grads[:4]).full_tensor())  # one mesh only
    assert torch_count == 2, torch_count


def check_a_nan_on_one_rank_makes_every_rank_skip() -> None:
    model = tensor_parallel_block(mesh_2d())
    optimizer = gradclip.ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.05,
                                                          momentum=0.9),
                                          gradclip.from_spec("norm:2.0,nonfinite=skip"))
    for step in range(2):
        inputs, targets = batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss(model, dp_rows(inputs), dp_rows(targets)).backward()
        if step == 1 and mesh_2d().get_rank() == 3:
            model.down.weight.grad.to_local().view(-1)[0] = math.nan
        before = [full(p.detach()).clone() for p in model.parameters()]
        optimizer.step()
    assert bool(optimizer.last_stats.skipped), "this rank did not skip"
    for p, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(full(p.detach()), old), "this rank changed its weights"


CHECKS = {
    "placements": check_every_placement_of_fully_shard_and_parallelize_module_is_recognised,
    "norm_types": check_clip_grad_norm_matches_torch_on_one_process_for_every_norm_type,
    "value_per_tensor_agc": check_value_per_tensor_and_agc_clipping_match_one_process,
    "collectives": check_the_norm_costs_one_all_reduce,
    "nan_skip": check_a_nan_on_one_rank_makes_every_rank_skip,
    **{f"strategy[{name}]": functools.partial(check_strategy_matches_one_process, name)
       for name in MESH_SPECS},
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_checks(CHECKS, 4, tmp_path_factory.mktemp("mesh2d"), "mesh2d")


def test_every_placement_fully_shard_and_tensor_parallel_produce_is_recognised(outcomes):
    assert_ok(outcomes, "placements")


def test_clip_grad_norm_equals_one_process_for_p_1_2_3_and_inf_on_every_rank(outcomes):
    assert_ok(outcomes, "norm_types")


def test_value_per_tensor_and_agc_clipping_equal_one_process(outcomes):
    assert_ok(outcomes, "value_per_tensor_agc")


@pytest.mark.parametrize("name", list(MESH_SPECS))
def test_every_strategy_matches_one_process_for_6_steps_with_state_identical_on_every_rank(
    outcomes, name
):
    assert_ok(outcomes, f"strategy[{name}]")


def test_the_global_norm_of_an_all_dtensor_model_costs_one_all_reduce(outcomes):
    assert_ok(outcomes, "collectives")


def test_a_nan_on_one_rank_makes_every_rank_skip_the_step(outcomes):
    assert_ok(outcomes, "nan_skip")
