"""Pipeline stages x FSDP2, expert and mixed meshes (4 gloo processes) equal one process.

Pipeline: the world mesh is ``(pp=2, dp=2)``; a rank holds one of two stages, ``fully_shard``-ed
on its ``dp`` sub-mesh, and clips with ``process_group=`` the ``pp`` group. To get the stage's
gradients without a pipeline schedule, each rank runs the whole forward with the other stage's
layers as a frozen copy, refreshed every step from the single-process reference (which is
what the other stage holds, if both are right: each rank checks its own stage against it).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.distributed as dist

import gradclip
from gradclip.distributed import process_group_over
from tests.distributed.meshes import (
    MESH_SPECS,
    TOLERANCE,
    Block,
    batch,
    full,
    loss,
    make,
    train_side_by_side,
)
from tests.distributed.ranks import (
    assert_ok,
    assert_same_on_every_rank,
    collectives_during,
    run_checks,
)


def two_stages() -> torch.nn.Sequential:
    return torch.nn.Sequential(Block(), Block())


@functools.cache
def pipeline_mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (2, 2), mesh_dim_names=("pp", "dp"))


def stage() -> int:
    return pipeline_mesh().get_local_rank("pp")


def pp_group():
    return pipeline_mesh().get_group("pp")


def dp_rows(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.chunk(2)[pipeline_mesh().get_local_rank("dp")]


def pipeline_side_by_side() -> tuple[torch.nn.Sequential, torch.nn.Sequential, object]:
    """This rank's stage sharded on ``dp`` (the other one frozen), the reference, and the
    function that copies the reference's other stage into the frozen copy."""
    from torch.distributed.fsdp import fully_shard

    model, reference = make(two_stages), make(two_stages)
    own, other = model[stage()], model[1 - stage()]
    other.requires_grad_(False)
    fully_shard(own, mesh=pipeline_mesh()["dp"])

    def refresh_frozen_stage() -> None:
        other.load_state_dict(reference[1 - stage()].state_dict())

    return model, reference, refresh_frozen_stage


def own_stage(model: torch.nn.Sequential):
    return model[stage()].named_parameters()


def check_pipeline_strategy_matches_one_process(name: str) -> None:
    model, reference, refresh = pipeline_side_by_side()
    train_side_by_side(MESH_SPECS[name], model, reference, own=own_stage, rows=dp_rows,
                       process_group=pp_group(), before_step=refresh)


def stage_grads() -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    model, reference, _ = pipeline_side_by_side()
    inputs, targets = batch(4)
    loss(model, dp_rows(inputs), dp_rows(targets)).backward()
    loss(reference, inputs, targets).backward()
    return model, reference


def check_pipeline_norm_joins_the_stages_for_every_norm_type() -> None:
    for norm_type in (1.0, 2.0, 3.0, math.inf):
        model, reference = stage_grads()
        own = model[stage()]
        total, count = collectives_during(lambda p=norm_type, own=own: gradclip.clip_grad_norm_(
            own.parameters(), 0.5, p, process_group=pp_group()))
        expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5, norm_type)
        torch.testing.assert_close(total, expected, **TOLERANCE, msg=f"p={norm_type}")
        assert count == 2, f"{count} collectives: one over dp, one over pp"
        assert_same_on_every_rank(total, f"the {norm_type}-norm")
        for p, q in zip(own.parameters(), reference[stage()].parameters(), strict=True):
            torch.testing.assert_close(full(p.grad), q.grad, **TOLERANCE)
        # Without the pipeline group the norm is the stage's alone: what torch's would be.
        stage_only = gradclip.get_total_norm([p.grad for p in own.parameters()], norm_type)
        assert not torch.allclose(stage_only, expected)


def check_pipeline_agc_and_value_clipping_match_one_process() -> None:
    model, reference = stage_grads()
    own = model[stage()]
    total = gradclip.adaptive_clip_grad_(own.parameters(), 0.05, process_group=pp_group())
    expected = gradclip.adaptive_clip_grad_(reference.parameters(), 0.05)
    torch.testing.assert_close(total, expected, **TOLERANCE)
    for p, q in zip(own.parameters(), reference[stage()].parameters(), strict=True):
        torch.testing.assert_close(full(p.grad), q.grad, **TOLERANCE)


def check_a_nan_in_one_stage_makes_every_stage_skip() -> None:
    model, _, refresh = pipeline_side_by_side()
    clipper = gradclip.from_spec("norm:2.0,nonfinite=skip")
    clipper.process_group = pp_group()
    optimizer = gradclip.ClippedOptimizer(
        torch.optim.SGD(model[stage()].parameters(), lr=0.05, momentum=0.9), clipper)
    for step in range(2):
        inputs, targets = batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss(model, dp_rows(inputs), dp_rows(targets)).backward()
        if step == 1 and dist.get_rank() == 3:  # stage 1 only
            model[1].down.weight.grad.to_local().view(-1)[0] = math.nan
        before = [full(p.detach()).clone() for p in model[stage()].parameters()]
        optimizer.step()
    assert bool(optimizer.last_stats.skipped), "this stage did not skip"
    for p, old in zip(model[stage()].parameters(), before, strict=True):
        assert torch.equal(full(p.detach()), old), "this stage changed its weights"


def check_a_process_group_that_shares_a_dtensors_mesh_is_refused() -> None:
    model, _ = stage_grads()
    grads = [p.grad for p in model[stage()].parameters()]
    dp_group = pipeline_mesh().get_group("dp")
    try:
        gradclip.get_total_norm(grads, process_group=dp_group)
    except ValueError as error:
        assert "counted more than once" in str(error)
    else:
        raise AssertionError("a process_group over the DTensors' own mesh was accepted")


def check_a_rank_with_no_gradient_still_joins_the_others() -> None:
    held = torch.full((3,), 2.0) if dist.get_rank() < 2 else None
    tensors = [] if held is None else [held]
    total = gradclip.get_total_norm(tensors, process_group=dist.group.WORLD)
    torch.testing.assert_close(total, torch.tensor(math.sqrt(2 * 3 * 4.0)))


def expert_and_dense_grads():
    """Experts sharded on the ``ep`` sub-mesh of the world, dense weights on its ``dp``
    sub-mesh, a DTensor on a separately made world mesh, and an ordinary tensor."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    world_mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "ep"))
    flat_mesh = init_device_mesh("cpu", (4,))
    generator = torch.Generator().manual_seed(7)
    experts = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    dense = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    router = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    frozen = torch.randn(7, generator=generator, dtype=torch.float64)
    grads = [
        distribute_tensor(experts, world_mesh["ep"], [Shard(0)]),
        distribute_tensor(dense, world_mesh["dp"], [Shard(0)]),
        distribute_tensor(router, flat_mesh, [Shard(0)]),
        distribute_tensor(dense, world_mesh, [Replicate(), Shard(1)]),
        frozen,
    ]
    wholes = [experts, dense, router, dense, frozen]
    return grads, wholes


def check_expert_sub_mesh_and_mixed_meshes_give_the_global_norm_in_one_all_reduce() -> None:
    grads, wholes = expert_and_dense_grads()
    for norm_type in (2.0, math.inf):
        total, count = collectives_during(lambda p=norm_type: gradclip.get_total_norm(grads, p))
        expected = torch.linalg.vector_norm(torch.cat([w.flatten() for w in wholes]), norm_type)
        torch.testing.assert_close(total, expected, **TOLERANCE, msg=f"p={norm_type}")
        assert count == 1, f"{count} collectives"
        assert_same_on_every_rank(total, "the norm")


def check_a_flattened_group_is_made_once_and_reused() -> None:
    if dist.get_rank() == 3:
        return
    ranks = (0, 1, 2)
    group = process_group_over(ranks)
    assert process_group_over(ranks) is group
    value = torch.ones(())
    dist.all_reduce(value, group=group)
    assert float(value) == 3.0


CHECKS = {
    "pipeline_norm_types": check_pipeline_norm_joins_the_stages_for_every_norm_type,
    "pipeline_agc": check_pipeline_agc_and_value_clipping_match_one_process,
    "pipeline_nan_skip": check_a_nan_in_one_stage_makes_every_stage_skip,
    "overlapping_group": check_a_process_group_that_shares_a_dtensors_mesh_is_refused,
    "empty_rank_joins": check_a_rank_with_no_gradient_still_joins_the_others,
    "expert_meshes": check_expert_sub_mesh_and_mixed_meshes_give_the_global_norm_in_one_all_reduce,
    "flattened_group": check_a_flattened_group_is_made_once_and_reused,
    **{f"pipeline_strategy[{name}]": functools.partial(check_pipeline_strategy_matches_one_process,
                                                       name)
       for name in MESH_SPECS},
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_checks(CHECKS, 4, tmp_path_factory.mktemp("pipeline"), "pipeline")


def test_a_pipeline_stage_clipped_with_the_pp_group_gets_the_global_norm_in_two_all_reduces(
    outcomes,
):
    assert_ok(outcomes, "pipeline_norm_types")


def test_pipeline_agc_equals_one_process(outcomes):
    assert_ok(outcomes, "pipeline_agc")


@pytest.mark.parametrize("name", list(MESH_SPECS))
def test_every_strategy_on_pipeline_stages_matches_one_process_for_6_steps(outcomes, name):
    assert_ok(outcomes, f"pipeline_strategy[{name}]")


def test_a_nan_in_one_stage_makes_every_stage_skip(outcomes):
    assert_ok(outcomes, "pipeline_nan_skip")


def test_a_process_group_overlapping_a_dtensor_mesh_is_a_value_error(outcomes):
    assert_ok(outcomes, "overlapping_group")


def test_a_rank_without_gradients_still_joins_the_process_group(outcomes):
    assert_ok(outcomes, "empty_rank_joins")


def test_expert_sub_mesh_and_mixed_meshes_give_the_global_norm_in_one_all_reduce(outcomes):
    assert_ok(outcomes, "expert_meshes")


def test_a_flattened_group_is_made_once(outcomes):
    assert_ok(outcomes, "flattened_group")
