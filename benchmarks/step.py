"""Training-step overhead of every clipping strategy and of the monitor, on the LSTM text model.

Each variant trains its own copy of the same model (the application's ``RecurrentModel``:
embedding -> LSTM -> linear head, the text task's sizes) with Adam on one fixed batch;
steps are timed round-robin, and the overhead is ``median(variant) / median(baseline) - 1``,
where the baseline is the same step without any clipping. A step is ``zero_grad``,
forward, loss, ``backward``, the clip (and/or the monitor), ``optimizer.step``.

Variants: every strategy spec; ``norm:1.0`` on flat gradient buffers (the cost of keeping
them valid included) and fused into a fused Adam step (against a fused Adam baseline);
``gradclip.GradientMonitor(model, every=1)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

import gradclip
from benchmarks.common import interleaved_medians, milliseconds, print_table
from gradclip.fused import fused_clip_step

SPECS = ["none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1", "zclip"]
LABELS = 6


def text_model(quick: bool) -> nn.Module:
    from gradclip.app.models import RecurrentModel

    torch.manual_seed(0)
    if quick:
        return RecurrentModel("lstm", LABELS, vocab_size=100, embed_dim=8, hidden_size=8)
    return RecurrentModel("lstm", LABELS, vocab_size=20_000, embed_dim=128, hidden_size=64)


def text_batch(quick: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(batch, length)`` and multi-label targets, like one text-task batch."""
    generator = torch.Generator().manual_seed(0)
    batch, length, vocab = (4, 8, 100) if quick else (64, 128, 20_000)
    tokens = torch.randint(1, vocab, (batch, length), generator=generator)
    labels = (torch.rand(batch, LABELS, generator=generator) < 0.1).float()
    return tokens, labels


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    after_backward: Callable[[], object] | None = None,
    step: Callable[[], object] | None = None,
) -> Callable[[], None]:
    """One step as a closure; ``after_backward`` clips/monitors, ``step`` replaces the step."""
    tokens, labels = batch

    def run() -> None:
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(tokens), labels).backward()
        if after_backward is not None:
            after_backward()
        (step or optimizer.step)()

    return run


def variants(quick: bool) -> dict[str, Callable[[], None]]:
    """Every timed step, by name; each owns a copy of the same model and its optimizer."""
    base, batch = text_model(quick), text_batch(quick)

    def fresh(fused: bool = False, flat: bool = False) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(base)
        if flat:
            gradclip.flatten_grads_(model)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)

    steps: dict[str, Callable[[], None]] = {}
    model, optimizer = fresh()
    steps["baseline"] = training_step(model, optimizer, batch)
    for spec in SPECS:
        model, optimizer = fresh()
        clipper = gradclip.from_spec(spec)
        steps[spec] = training_step(model, optimizer, batch,
                                    lambda c=clipper, m=model: c.clip_(m.parameters()))
    model, optimizer = fresh(flat=True)
    clipper = gradclip.NormClip(1.0)
    steps["norm:1.0 flat"] = training_step(model, optimizer, batch,
                                           lambda c=clipper, m=model: c.clip_(m.parameters()))
    model, optimizer = fresh(fused=True)
    steps["baseline fused-adam"] = training_step(model, optimizer, batch)
    model, optimizer = fresh(fused=True, flat=True)
    steps["norm:1.0 flat+fused"] = training_step(
        model, optimizer, batch, step=lambda o=optimizer: fused_clip_step(o, gradclip.NormClip(1.0))
    )
    model, optimizer = fresh()
    monitor = gradclip.GradientMonitor(model, every=1)
    steps["monitor every=1"] = training_step(model, optimizer, batch, monitor.step)
    return steps


def run_step_benchmark(quick: bool, repeats: int) -> dict[str, object]:
    """Median step times (ms) and overheads (%) against the matching unclipped baseline."""
    medians = interleaved_medians(variants(quick), repeats, warmup=3)
    overhead = {}
    for name, seconds in medians.items():
        if name.startswith("baseline"):
            continue
        baseline = medians["baseline fused-adam" if "fused" in name else "baseline"]
        overhead[name] = round(100.0 * (seconds / baseline - 1.0), 2)
    rows = [("variant", "median ms", "overhead %")]
    rows += [(name, f"{seconds * 1e3:.3f}", f"{overhead.get(name, 0.0):+.2f}")
             for name, seconds in medians.items()]
    print_table(f"training step, LSTM text model, threads={torch.get_num_threads()}", rows)
    return {"median_ms": milliseconds(medians), "overhead_percent": overhead}
