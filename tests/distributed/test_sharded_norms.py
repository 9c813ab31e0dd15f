"""Global norms over sharded gradients: FSDP2 DTensors, process groups, mixed meshes, NaN."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

import gradclip
from tests.distributed.spawn import run_on_two_ranks

NORM_TYPES = [2.0, 1.0, math.inf]


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def fsdp_and_reference(rank, world_size, scale=1.0):
    """An FSDP2 model fed half a batch per rank, and its single-process twin fed the whole batch."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    model, reference = make_model(), make_model()
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh)
    batch = torch.randn(8, 5, generator=torch.Generator().manual_seed(1)) * scale
    # FSDP2 averages gradients over ranks; scale the local loss so both see the same sum.
    model(batch.chunk(world_size)[rank]).pow(2).sum().mul(world_size).backward()
    reference(batch).pow(2).sum().backward()
    return model, reference


def assert_same_grads(model, reference, rtol=1e-5):
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=rtol, atol=1e-7)


def check_fsdp2_norm_clipping(rank, world_size):
    for norm_type in NORM_TYPES:
        model, reference = fsdp_and_reference(rank, world_size)
        total = gradclip.clip_grad_norm_(model.parameters(), 0.5, norm_type)
        expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5, norm_type)
        assert type(total) is torch.Tensor, "the global norm must be an ordinary tensor"
        torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
        assert_same_grads(model, reference)


def check_fsdp2_value_per_tensor_and_agc(rank, world_size):
    model, reference = fsdp_and_reference(rank, world_size)
    gradclip.clip_grad_value_(model.parameters(), 0.3)
    torch.nn.utils.clip_grad_value_(reference.parameters(), 0.3)
    assert_same_grads(model, reference)

    model, reference = fsdp_and_reference(rank, world_size)
    norms = gradclip.clip_grad_norm_per_tensor_(model.parameters(), 0.4)
    expected = gradclip.clip_grad_norm_per_tensor_(reference.parameters(), 0.4)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
    assert_same_grads(model, reference)

    model, reference = fsdp_and_reference(rank, world_size, scale=10.0)
    total = gradclip.adaptive_clip_grad_(model.parameters(), 0.01)
    expected = gradclip.adaptive_clip_grad_(reference.parameters(), 0.01)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
    assert_same_grads(model, reference)


def check_process_group_and_mixed_meshes(rank, world_size):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    full = torch.randn(10, generator=torch.Generator().manual_seed(3))
    shard = torch.nn.Parameter(torch.zeros(5))
    shard.grad = full.chunk(world_size)[rank].clone()
    total = gradclip.clip_grad_norm_([shard], 1.0, process_group=dist.group.WORLD)
    torch.testing.assert_close(total, full.norm(), rtol=1e-6, atol=0)
    torch.testing.assert_close(shard.grad, full.chunk(world_size)[rank] / (full.norm() + 1e-6))

    expert_mesh = init_device_mesh("cpu", (world_size,))
    data_mesh = init_device_mesh("cpu", (world_size,))
    expert = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    dense = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    frozen = torch.randn(7, generator=torch.Generator().manual_seed(6))
    grads = [
        distribute_tensor(expert, expert_mesh, [Shard(0)]),
        distribute_tensor(dense, data_mesh, [Replicate()]),
        frozen,
    ]
    expected = torch.cat([expert.flatten(), dense.flatten(), frozen]).norm()
    torch.testing.assert_close(gradclip.get_total_norm(grads), expected, rtol=1e-6, atol=0)


def check_per_tensor_norms_of_mixed_dtype_shards_follow_the_input_order(rank, world_size):
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float16]
    fulls = [torch.full((2 * world_size,), float(i + 1), dtype=d) for i, d in enumerate(dtypes)]
    shards = []
    for full in fulls:
        shard = torch.nn.Parameter(torch.zeros(2, dtype=full.dtype))
        shard.grad = full.chunk(world_size)[rank].clone()
        shards.append(shard)
    norms = gradclip.clip_grad_norm_per_tensor_(shards, 100.0, process_group=dist.group.WORLD)
    expected = torch.stack([full.double().norm() for full in fulls])
    torch.testing.assert_close(norms.double(), expected, rtol=1e-3, atol=0)


def check_nan_on_one_rank_makes_every_rank_skip(rank, world_size):
    for norm_type in NORM_TYPES:
        model, _ = fsdp_and_reference(rank, world_size)
        if rank == 1:
            next(model.parameters()).grad.to_local()[0, 0] = math.nan
        total = gradclip.clip_grad_norm_(model.parameters(), 1.0, norm_type, nonfinite="skip")
        assert not torch.isfinite(total), f"rank {rank} did not see the NaN (norm_type={norm_type})"
        for p in model.parameters():
            assert torch.count_nonzero(p.grad.to_local()) == 0


def test_fsdp2_norm_clipping_matches_a_single_process_on_the_full_batch():
    run_on_two_ranks(check_fsdp2_norm_clipping)


def test_fsdp2_value_per_tensor_and_agc_clipping_match_a_single_process():
    run_on_two_ranks(check_fsdp2_value_per_tensor_and_agc)


def test_process_group_and_mixed_meshes_give_the_global_norm():
    run_on_two_ranks(check_process_group_and_mixed_meshes)


def test_per_tensor_norms_of_mixed_dtype_shards_belong_to_their_own_tensors():
    run_on_two_ranks(check_per_tensor_norms_of_mixed_dtype_shards_follow_the_input_order)


def test_a_nan_on_one_rank_makes_every_rank_skip():
    run_on_two_ranks(check_nan_on_one_rank_makes_every_rank_skip)
