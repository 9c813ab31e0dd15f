"""Helpers of the parity tests: random parameters with gradients, their clones, bitwise checks."""

from __future__ import annotations

import torch


def make_params(shapes, dtypes, seed, scale=1.0, with_grad=None):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for index, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        p = torch.nn.Parameter(torch.randn(shape, generator=generator).to(dtype))
        if with_grad is None or with_grad[index]:
            p.grad = (torch.randn(shape, generator=generator) * scale).to(dtype)
        params.append(p)
    return params


def clone_params(params):
    clones = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        clones.append(q)
    return clones


def assert_grads_equal(ours, theirs):
    for p, q in zip(ours, theirs, strict=True):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert p.grad.dtype == q.grad.dtype
            # bit for bit, NaN where torch has NaN
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, equal_nan=True)
