"""The whole clip path reads no tensor value on the host (proved on CPU by dispatch recording).

Every op and strategy below runs inside ``forbid_host_sync()``, which fails on any
``aten._local_scalar_dense`` (what ``.item()``, ``float(t)``, ``bool(t)``, ``if t:`` dispatch
to): on CUDA, that op is a device-to-host synchronisation. The ``"error"`` policies are left
out: deciding to raise is a host decision by design.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradclip
from gradclip.fused import fused_clip_step
from tests.contracts.sync_guard import forbid_host_sync


def make_model(flat: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    if flat:
        gradclip.flatten_grads_(model)
    return model


def backward(model: nn.Module, step: int = 0) -> None:
    model.zero_grad()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(step))
    (model(x).square().sum() * (1 + step % 5)).backward()


OPS = {
    "clip_grad_norm_": lambda ps: gradclip.clip_grad_norm_(ps, 0.1),
    "clip_grad_norm_ inf": lambda ps: gradclip.clip_grad_norm_(ps, 0.1, "inf"),
    "clip_grad_norm_ skip": lambda ps: gradclip.clip_grad_norm_(ps, 0.1, nonfinite="skip"),
    "clip_grad_norm_ tensor max_norm": lambda ps: gradclip.clip_grad_norm_(ps, torch.tensor(0.1)),
    "clip_grad_value_": lambda ps: gradclip.clip_grad_value_(ps, 0.01),
    "get_total_norm": lambda ps: gradclip.get_total_norm([p.grad for p in ps]),
    "clip_grads_with_norm_": lambda ps: gradclip.clip_grads_with_norm_(ps, 0.1, torch.tensor(3.0)),
    "clip_grad_norm_per_tensor_": lambda ps: gradclip.clip_grad_norm_per_tensor_(ps, 0.1),
    "adaptive_clip_grad_": lambda ps: gradclip.adaptive_clip_grad_(ps, 0.01, nonfinite="skip"),
}


@pytest.mark.parametrize("flat", [False, True], ids=["per-tensor", "flat"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_functional_op_never_reads_a_tensor_on_the_host(op, flat):
    model = make_model(flat)
    backward(model)
    params = list(model.parameters())
    with forbid_host_sync():
        OPS[op](params)


SPECS = ["none", "norm:0.5", "value:0.05", "agc:0.01", "autoclip:0.1", "zclip:warmup_steps=3",
         "adagc:warmup_steps=3", "spikeskip:window=19,sigma=2", "agc:0.01+norm:0.5",
         "spikeskip:window=19+zclip:warmup_steps=3"]


@pytest.mark.parametrize("flat", [False, True], ids=["per-tensor", "flat"])
@pytest.mark.parametrize("spec", SPECS)
def test_strategy_never_reads_a_tensor_on_the_host_through_warm_up_and_after(spec, flat):
    model = make_model(flat)
    clipper = gradclip.from_spec(spec)
    for step in range(8):
        backward(model, step)
        with forbid_host_sync():
            clipper.clip_(model.parameters())


@pytest.mark.parametrize("policy", [None, "skip"])
def test_fused_clip_step_never_reads_a_tensor_on_the_host(policy):
    model = make_model(flat=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    clipper = gradclip.NormClip(0.5, nonfinite=policy)
    for step in range(3):
        backward(model, step)
        with forbid_host_sync():
            fused_clip_step(optimizer, clipper)


def test_keeping_flat_buffers_valid_through_backward_never_reads_a_tensor_on_the_host():
    model = make_model(flat=True)
    backward(model)
    with forbid_host_sync():
        backward(model, 1)
