"""Training-step overhead of every clipping strategy and of the monitor, on the LSTM text model.

Each variant trains its own copy of the same model (the application's ``RecurrentModel``:
embedding -> LSTM -> linear head, the text task's sizes) with Adam on one fixed batch;
steps are timed round-robin, and the overhead is ``median(variant) / median(baseline) - 1``,
where the baseline is the same step without any clipping (and, less noisy, the same from
the timed tail of each step: clip plus optimizer step). A step is ``zero_grad``,
forward, loss, ``backward``, the clip (and/or the monitor), ``optimizer.step``.

Variants: every strategy spec (chains included; SpikeSkip is given the step's loss), on
ordinary gradients and on flat gradient buffers (``flat``: against ``baseline flat``, the
same step on flat buffers without clipping; what keeping the buffers valid costs is
``baseline flat`` against ``baseline``); ``norm:1.0`` fused into a fused Adam step (against a fused Adam baseline);
``gradclip.GradientMonitor(model, every=1)``.

    python -m benchmarks.step [--threads 1,2] [--repeats 40] [--clock cpu|wall] [--quick]

prints the table per thread count with the load average before and after, and writes the
figures into the ``"step"`` entry of ``--json`` (default ``benchmarks/results.json``; the
other entries are kept).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import gradclip
from benchmarks.common import (
    CLOCKS,
    interleaved_medians,
    load_average,
    machine,
    milliseconds,
    print_table,
    thread_counts,
    update_json,
)
from benchmarks.markdown import step_table, write_markdown
from gradclip.fused import fused_clip_step

SPECS = [
    "none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1", "zclip", "adagc", "spikeskip",
    "spikeskip+norm:1.0", "agc:0.01+norm:1.0",
]
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


class TrainingStep:
    """One training step as a callable; ``after_backward`` clips/monitors, ``step`` replaces
    ``optimizer.step``. Records how long the part after ``backward()`` took (``tail_times``):
    the clip and the optimizer step, without the noisier forward and backward."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: tuple[torch.Tensor, torch.Tensor],
        after_backward: Callable[[], object] | None = None,
        step: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.model, self.optimizer, self.batch, self.clock = model, optimizer, batch, clock
        self.after_backward, self.step = after_backward, step or optimizer.step
        self.tail_times: list[float] = []
        self.loss: torch.Tensor | None = None  # this step's loss, for SpikeSkip

    def __call__(self) -> None:
        tokens, labels = self.batch
        self.optimizer.zero_grad()
        self.loss = F.binary_cross_entropy_with_logits(self.model(tokens), labels)
        self.loss.backward()
        start = self.clock()
        if self.after_backward is not None:
            self.after_backward()
        self.step()
        self.tail_times.append(self.clock() - start)


def variants(quick: bool) -> dict[str, TrainingStep]:
    """Every timed step, by name; each owns a copy of the same model and its optimizer."""
    base, batch = text_model(quick), text_batch(quick)

    def fresh(fused: bool = False, flat: bool = False) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(base)
        if flat:
            gradclip.flatten_grads_(model)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)

    steps: dict[str, TrainingStep] = {}
    model, optimizer = fresh()
    steps["baseline"] = TrainingStep(model, optimizer, batch)
    model, optimizer = fresh(flat=True)
    steps["baseline flat"] = TrainingStep(model, optimizer, batch)
    for spec in SPECS:
        for flat in (False, True):
            model, optimizer = fresh(flat=flat)
            clipper = gradclip.from_spec(spec)
            step = TrainingStep(model, optimizer, batch)
            step.after_backward = (
                lambda c=clipper, m=model, s=step: c.clip_(m.parameters(), loss=s.loss)
            )
            steps[spec + (" flat" if flat else "")] = step
    model, optimizer = fresh(fused=True)
    steps["baseline fused-adam"] = TrainingStep(model, optimizer, batch)
    model, optimizer = fresh(fused=True, flat=True)
    steps["norm:1.0 flat+fused"] = TrainingStep(
        model, optimizer, batch, step=lambda o=optimizer: fused_clip_step(o, gradclip.NormClip(1.0))
    )
    model, optimizer = fresh()
    monitor = gradclip.GradientMonitor(model, every=1)
    steps["monitor every=1"] = TrainingStep(model, optimizer, batch, monitor.step)
    return steps


def run_step_benchmark(
    quick: bool, repeats: int, clock: Callable[[], float] = time.process_time
) -> dict[str, object]:
    """Median step times (ms) and two overhead estimates (%) against the matching baseline.

    ``overhead_percent``: ``median(step) / median(baseline step) - 1``, everything included
    (flat buffers' re-attach hooks, the monitor's backward hooks). ``tail_overhead_percent``:
    ``(median(tail) - median(baseline tail)) / median(baseline step)``, where the tail is the
    clip plus the optimizer step: the same cost measured without forward/backward noise.
    Variants on flat buffers are measured against ``baseline flat`` (flat buffers, no clip):
    the strategy's own cost; what the buffers cost is ``baseline flat`` against ``baseline``
    (in ``median_ms`` and ``flat_buffers_percent``).
    """
    steps = variants(quick)
    for step in steps.values():
        step.clock = clock
    medians = interleaved_medians(steps, repeats, warmup=3, clock=clock)
    warmup = len(next(iter(steps.values())).tail_times) - repeats
    tails = {name: statistics.median(step.tail_times[warmup:]) for name, step in steps.items()}
    overhead, tail_overhead = {}, {}
    for name, seconds in medians.items():
        if name.startswith("baseline"):
            continue
        baseline = "baseline fused-adam" if "fused" in name else "baseline"
        if name.endswith(" flat"):  # the strategy's cost; flat buffers' own is "baseline flat"
            baseline = "baseline flat"
        overhead[name] = round(100.0 * (seconds / medians[baseline] - 1.0), 2)
        tail_overhead[name] = round(100.0 * (tails[name] - tails[baseline]) / medians[baseline], 2)
    flat_cost = round(100.0 * (medians["baseline flat"] / medians["baseline"] - 1.0), 2)
    rows = [("variant", "median ms", "overhead %", "tail overhead %")]
    rows += [(name, f"{seconds * 1e3:.3f}", f"{overhead.get(name, 0.0):+.2f}",
              f"{tail_overhead.get(name, 0.0):+.2f}") for name, seconds in medians.items()]
    print_table(f"training step, LSTM text model, threads={torch.get_num_threads()}", rows)
    print(f"flat buffers alone (baseline flat / baseline): {flat_cost:+.2f} %")
    return {
        "load_average": load_average(),
        "flat_buffers_percent": flat_cost,
        "median_ms": milliseconds(medians),
        "tail_median_ms": milliseconds(tails),
        "overhead_percent": overhead,
        "tail_overhead_percent": tail_overhead,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--threads", default="1",
                        help="torch.set_num_threads values, comma-separated (default: 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds (default: 40; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a tiny model: a smoke test")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: the process's CPU time (default), wall: wall-clock time")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) (subnormal gradients count as 0)")
    parser.add_argument("--json", default="benchmarks/results.json",
                        help="file whose \"step\" entry receives the figures")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as Markdown to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    threads_to_time = thread_counts(args.threads)
    repeats = args.repeats or (3 if args.quick else 40)
    payload: dict[str, object] = {
        "command": " ".join(["python -m benchmarks.step", *argv]),
        "machine": machine(),
        "clock": args.clock,
        "flush_denormal": args.flush_denormal and torch.set_flush_denormal(True),
    }
    for threads in threads_to_time:
        torch.set_num_threads(threads)
        print(f"torch.set_num_threads({threads}); torch.get_num_threads() = "
              f"{torch.get_num_threads()}; load average {load_average()}")
        payload[f"threads={threads}"] = run_step_benchmark(args.quick, repeats, CLOCKS[args.clock])
        print(f"load average after: {load_average()}")
    payload["load_average_end"] = load_average()
    update_json(args.json, {"step": payload})
    if args.markdown is not None:
        write_markdown(args.markdown, step_table(payload, SPECS))
    print(f"\nwrote the \"step\" entry of {args.json}")
    return payload


if __name__ == "__main__":
    main()
