"""On CUDA the clip path runs without a device-to-host synchronisation (needs a GPU).

``torch.cuda.set_sync_debug_mode("error")`` makes every synchronising CUDA call raise, so a
clean run proves the claim on the real device. Skipped without CUDA; the CPU suite proves
the same code path by dispatch recording (``test_no_host_sync.py``).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

import gradclip
from gradclip.fused import fused_clip_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SPECS = ["none", "norm:0.5", "value:0.05", "agc:0.01", "autoclip:0.1", "zclip:warmup_steps=3",
         "adagc:warmup_steps=3", "spikeskip:window=19,sigma=2", "agc:0.01+norm:0.5",
         "spikeskip:window=19+zclip:warmup_steps=3"]


@contextmanager
def sync_is_an_error():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def make_model(flat: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.LSTM(8, 16, num_layers=2).cuda()
    if flat:
        gradclip.flatten_grads_(model)
    return model


def backward(model: nn.Module, step: int) -> None:
    model.zero_grad()
    x = torch.randn(5, 3, 8, device="cuda")
    output, _ = model(x)
    (output.square().sum() * (1 + step % 5)).backward()


@pytest.mark.parametrize("flat", [False, True], ids=["per-tensor", "flat"])
@pytest.mark.parametrize("spec", SPECS)
def test_strategy_clips_on_cuda_without_a_host_sync(spec, flat):
    model = make_model(flat)
    clipper = gradclip.from_spec(spec)
    for step in range(6):
        backward(model, step)
        with sync_is_an_error():
            clipper.clip_(model.parameters())


@pytest.mark.parametrize("flat", [False, True], ids=["per-tensor", "flat"])
def test_functional_ops_clip_on_cuda_without_a_host_sync(flat):
    model = make_model(flat)
    backward(model, 1)
    params = list(model.parameters())
    with sync_is_an_error():
        gradclip.clip_grad_norm_(params, 0.5, nonfinite="skip")
        gradclip.clip_grad_norm_(params, torch.tensor(0.5, device="cuda"), "inf")
        gradclip.clip_grad_value_(params, 0.01)
        gradclip.clip_grad_norm_per_tensor_(params, 0.5)
        gradclip.adaptive_clip_grad_(params, 0.01)


def test_fused_clip_step_on_cuda_without_a_host_sync():
    model = make_model(flat=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    clipper = gradclip.NormClip(0.5, nonfinite="skip")
    for step in range(3):
        backward(model, step)
        with sync_is_an_error():
            fused_clip_step(optimizer, clipper)
