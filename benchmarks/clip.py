"""Clipping speed: gradclip against torch.nn.utils and against one read pass over the gradients.

    python -m benchmarks.clip [--threads 1,2] [--repeats 30] [--clock cpu|wall] [--json PATH]
                              [--models many_small_2000x1k,lstm_stack] [--no-step]
    python -m benchmarks.clip --quick          # tiny sizes, seconds: a smoke test

For each model shape (many small tensors, an LSTM language model, a few large tensors, a
real nn.LSTM + nn.GRU stack, an embedding + 2-layer bidirectional LSTM stack) it times, round-robin in one process:

- ``torch_norm`` / ``torch_value``: ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``;
- ``gradclip_norm`` / ``gradclip_value``: gradclip on the same (ordinary) gradients;
- ``*_flat``: gradclip after ``gradclip.flatten_grads_`` (one buffer per device and dtype;
  norms per gradient, bit-identical to torch); ``*_fast``: ``exact_norm=False`` (one
  reduction per buffer);
- ``fused_clip``: the clip's own work when fused into the optimizer step (the norm and the
  grad scale; the step kernel then applies it while it reads the gradient anyway);
- ``fused_step`` / ``fused_step_clipped``: a fused ``Adam`` step without / with the clip
  (flat, fast norms);
- ``read_pass``: one ``sum`` over the flat gradient buffer -- the memory-bandwidth floor.

Then the whole-training-step overhead of every strategy and of the monitor on the LSTM text
model (:mod:`benchmarks.step`). Prints medians and ratios; writes them all to ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

import gradclip
from benchmarks.common import (
    CLOCKS,
    interleaved_medians,
    load_average,
    machine,
    milliseconds,
    print_table,
    ratio,
    thread_counts,
    update_json,
)
from benchmarks.markdown import clip_tables, write_markdown
from benchmarks.step import run_step_benchmark
from gradclip.fused import fused_clip_step, norm_clip_grad_scale

MAX_NORM = 1.0
CLIP_VALUE = 1e-3


def rnn_stack_shapes(quick: bool) -> list[tuple[int, ...]]:
    """Parameter shapes of a 2-layer LSTM followed by a 2-layer GRU (built on the meta device)."""
    width = 16 if quick else 1024
    stack = nn.ModuleList([
        nn.LSTM(width // 2, width, num_layers=2, device="meta"),
        nn.GRU(width, width, num_layers=2, device="meta"),
    ])
    return [tuple(p.shape) for p in stack.parameters()]


def lstm_stack_shapes(quick: bool) -> list[tuple[int, ...]]:
    """Parameter shapes of an embedding (20,000 x 128) and a 2-layer bidirectional LSTM (256)."""
    vocab, embed, hidden = (100, 8, 16) if quick else (20_000, 128, 256)
    stack = nn.ModuleList([
        nn.Embedding(vocab, embed, device="meta"),
        nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, device="meta"),
    ])
    return [tuple(p.shape) for p in stack.parameters()]


def model_shapes(quick: bool) -> dict[str, list[tuple[int, ...]]]:
    """The benchmark's gradient shapes: ``name -> list of tensor shapes``."""
    if quick:
        return {
            "many_small_2000x1k": [(100,)] * 50,
            "lstm_lm_24x1M": [(1_000,)] * 24,
            "few_large_4x16M": [(10_000,)] * 4,
            "rnn_stack": rnn_stack_shapes(quick),
            "lstm_stack": lstm_stack_shapes(quick),
        }
    return {
        "many_small_2000x1k": [(1_000,)] * 2_000,
        "lstm_lm_24x1M": [(1_000, 1_000)] * 24,
        "few_large_4x16M": [(16_000_000,)] * 4,
        "rnn_stack": rnn_stack_shapes(quick),
        "lstm_stack": lstm_stack_shapes(quick),
    }


def parameters_with_grads(shapes: Sequence[tuple[int, ...]], seed: int) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    return params


def time_model(
    shapes: Sequence[tuple[int, ...]], repeats: int, clock: Callable[[], float]
) -> dict[str, object]:
    """Medians (ms) and ratios for one model shape."""
    plain = parameters_with_grads(shapes, seed=0)
    flat = parameters_with_grads(shapes, seed=0)
    [buffer] = [b.buffer for b in gradclip.flatten_grads_(flat)]
    fast = parameters_with_grads(shapes, seed=0)
    gradclip.flatten_grads_(fast, exact_norm=False)
    optimizer = torch.optim.Adam(fast, lr=1e-6, fused=True)
    clipper = gradclip.NormClip(MAX_NORM)
    candidates = {
        "read_pass": lambda: buffer.sum(),
        "torch_norm": lambda: torch.nn.utils.clip_grad_norm_(plain, MAX_NORM),
        "gradclip_norm": lambda: gradclip.clip_grad_norm_(plain, MAX_NORM),
        "gradclip_norm_flat": lambda: gradclip.clip_grad_norm_(flat, MAX_NORM),
        "gradclip_norm_flat_fast": lambda: gradclip.clip_grad_norm_(fast, MAX_NORM),
        "fused_clip": lambda: norm_clip_grad_scale([p.grad for p in flat], MAX_NORM),
        "fused_clip_fast": lambda: norm_clip_grad_scale([p.grad for p in fast], MAX_NORM),
        "torch_value": lambda: torch.nn.utils.clip_grad_value_(plain, CLIP_VALUE),
        "gradclip_value": lambda: gradclip.clip_grad_value_(plain, CLIP_VALUE),
        "gradclip_value_flat": lambda: gradclip.clip_grad_value_(flat, CLIP_VALUE),
        "fused_step": optimizer.step,
        "fused_step_clipped": lambda: fused_clip_step(optimizer, clipper),
    }
    medians = interleaved_medians(candidates, repeats, clock=clock)
    return {
        "tensors": len(shapes),
        "elements": buffer.numel(),
        "median_ms": milliseconds(medians),
        "ratios": clip_ratios(medians),
    }


def clip_ratios(medians: dict[str, float]) -> dict[str, float]:
    """The ratios the performance targets are stated in."""
    step_overhead = medians["fused_step_clipped"] - medians["fused_step"]
    return {
        "torch_norm / gradclip_norm_flat": ratio(medians["torch_norm"], medians["gradclip_norm_flat"]),
        "torch_norm / gradclip_norm_flat_fast": ratio(
            medians["torch_norm"], medians["gradclip_norm_flat_fast"]
        ),
        "torch_norm / fused_clip": ratio(medians["torch_norm"], medians["fused_clip"]),
        "torch_norm / fused_clip_fast": ratio(medians["torch_norm"], medians["fused_clip_fast"]),
        "gradclip_norm / torch_norm": ratio(medians["gradclip_norm"], medians["torch_norm"]),
        "gradclip_norm_flat / torch_norm": ratio(medians["gradclip_norm_flat"], medians["torch_norm"]),
        "gradclip_norm_flat_fast / torch_norm": ratio(
            medians["gradclip_norm_flat_fast"], medians["torch_norm"]
        ),
        "gradclip_value_flat / torch_value": ratio(
            medians["gradclip_value_flat"], medians["torch_value"]
        ),
        "torch_value / gradclip_value_flat": ratio(medians["torch_value"], medians["gradclip_value_flat"]),
        "gradclip_value / torch_value": ratio(medians["gradclip_value"], medians["torch_value"]),
        "fused_clip / read_pass": ratio(medians["fused_clip"], medians["read_pass"]),
        "fused_clip_fast / read_pass": ratio(medians["fused_clip_fast"], medians["read_pass"]),
        "(fused_step_clipped - fused_step) / read_pass": ratio(step_overhead, medians["read_pass"]),
        "gradclip_norm_flat / read_pass": ratio(medians["gradclip_norm_flat"], medians["read_pass"]),
    }


def print_clip_results(threads: int, results: dict[str, dict[str, object]]) -> None:
    names = list(next(iter(results.values()))["median_ms"])
    rows = [("median ms", *results)]
    rows += [(name, *(f"{r['median_ms'][name]:.3f}" for r in results.values())) for name in names]
    print_table(f"clipping, torch.set_num_threads({threads})", rows)
    ratio_names = list(next(iter(results.values()))["ratios"])
    rows = [("ratio", *results)]
    rows += [(name, *(f"{r['ratios'][name]:.2f}" for r in results.values())) for name in ratio_names]
    print_table("ratios", rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.clip", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--threads", default="1",
                        help="torch.set_num_threads values, comma-separated (default: 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per benchmark (default: 30 for clipping, 40 for steps)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write results")
    parser.add_argument("--no-step", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as Markdown to this file")
    parser.add_argument("--models", default=None,
                        help="model shapes to time, comma-separated (default: all of them)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True): subnormal floats (vanishing "
                             "gradients) count as 0 instead of taking the slow path")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: the process's CPU time (default; robust on a shared "
                             "machine), wall: wall-clock time")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    threads_to_time = thread_counts(args.threads)
    clip_repeats = args.repeats or (3 if args.quick else 30)
    step_repeats = args.repeats or (3 if args.quick else 40)
    payload: dict[str, object] = {
        "command": " ".join(["python -m benchmarks.clip", *argv]),
        "machine": machine(),
        "quick": args.quick,
        "clock": args.clock,
        "flush_denormal": args.flush_denormal and torch.set_flush_denormal(True),
        "clip": {},
    }
    if not args.no_step:  # else the "step" entry of --json is kept
        payload["step"] = {}
    shapes_by_model = model_shapes(args.quick)
    if args.models is not None:
        unknown = set(args.models.split(",")) - set(shapes_by_model)
        if unknown:
            sys.exit(f"--models: unknown {sorted(unknown)}; known: {sorted(shapes_by_model)}")
        shapes_by_model = {m: shapes_by_model[m] for m in args.models.split(",")}
    for threads in threads_to_time:
        torch.set_num_threads(threads)
        print(f"torch.set_num_threads({threads}); torch.get_num_threads() = "
              f"{torch.get_num_threads()}; load average {load_average()}")
        clock = CLOCKS[args.clock]
        results = {name: time_model(shapes, clip_repeats, clock)
                   for name, shapes in shapes_by_model.items()}
        results_load = load_average()
        print_clip_results(threads, results)
        print(f"load average after: {results_load}")
        payload["clip"][f"threads={threads}"] = results
        if not args.no_step:
            payload["step"][f"threads={threads}"] = run_step_benchmark(
                args.quick, step_repeats, clock
            )
    payload["load_average_end"] = load_average()
    update_json(args.json, payload)
    if args.markdown is not None:
        write_markdown(args.markdown, clip_tables(payload))
    print(f"\nwrote {args.json}")
    return payload


if __name__ == "__main__":
    main()
