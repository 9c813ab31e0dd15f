"""Interim stand-in for ``gradclip.from_spec`` until the strategies package lands (delete then)."""

from __future__ import annotations

import torch

import gradclip
from gradclip.parameters import named_tensors
from gradclip.strategies.base import Clipper, ClipStats


class _Interim(Clipper):
    def __init__(self, kind: str, value: float | None, nonfinite: str | None):
        self.kind, self.value, self.nonfinite = kind, value, nonfinite or "propagate"

    def clip_(self, parameters):
        named = named_tensors(parameters)
        params = [p for _, p in named]
        grads = [p.grad for p in params if p.grad is not None]
        total = gradclip.get_total_norm(grads) if grads else torch.tensor(0.0)
        skipped = ~torch.isfinite(total) if self.nonfinite == "skip" else torch.tensor(False)
        threshold = None
        if self.kind == "norm":
            gradclip.clip_grad_norm_(params, self.value, nonfinite=self.nonfinite)
            threshold = torch.tensor(self.value)
            clipped = total > self.value
        elif self.kind == "value":
            clipped = torch.stack([g.abs().max() for g in grads]).max() > self.value
            gradclip.clip_grad_value_(params, self.value)
            threshold = torch.tensor(self.value)
        else:
            clipped = torch.tensor(False)
            if self.nonfinite == "skip":
                for g in grads:
                    g.masked_fill_(skipped, 0.0)
        return ClipStats(total, threshold, clipped, skipped)


def from_spec(spec: str) -> Clipper:
    kind, _, rest = spec.partition(":")
    parts = [p for p in rest.split(",") if p]
    value, nonfinite = None, None
    for part in parts:
        if part.startswith("nonfinite="):
            nonfinite = part.split("=", 1)[1]
        else:
            value = float(part)
    if kind not in ("none", "norm", "value") or (kind != "none" and value is None):
        raise ValueError(f"unknown clip spec {spec!r}")
    if value is not None and not value > 0:
        raise ValueError(f"threshold must be positive, got {value}")
    return _Interim(kind, value, nonfinite)
