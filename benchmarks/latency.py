"""The cost of the number of collectives: clipping on meshes with a simulated network latency.

On one machine a gloo all-reduce of a few numbers takes microseconds, so the number of
collectives a clip issues does not show; on a cluster each one costs a network round trip
(tens of microseconds to milliseconds, more across nodes). Here every collective entry point
the two libraries use (``torch.distributed.all_reduce``, and the functional collectives
DTensor redistribution calls: ``all_reduce``, ``all_gather_single``,
``reduce_scatter_single``) is wrapped to sleep a fixed ``--latency-ms`` first, on every
rank, and counted. Then, in gloo processes on this machine, side by side in one run:

- ``gradclip``: ``gradclip.clip_grad_norm_(params, 1.0)``;
- ``torch``: ``torch.nn.utils.clip_grad_norm_(params, 1.0)``;

on FSDP2-style DTensor gradients: a 1-D mesh of 2 ranks (``Shard(0)``), and a 2-D
``dp x tp`` mesh of 4 ranks (row-wise and column-wise tensor-parallel weights, norms
replicated over ``tp``). Wall clock, after a barrier, median of ``--repeats`` calls,
interleaved. Both norms are checked equal.

    python -m benchmarks.latency [--latency-ms 0,1,5] [--repeats 10] [--tensors 64] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives  # noqa: F401  (wrapped by SimulatedLatency)

import gradclip
from benchmarks.common import load_average, machine, print_table, ratio, run_on_gloo, update_json
from benchmarks.markdown import latency_table, write_markdown

# Module attributes the collectives are looked up through at call time.
WRAPPED = [
    ("torch.distributed", "all_reduce"),
    ("torch.distributed._functional_collectives", "all_reduce"),
    ("torch.distributed._functional_collectives", "all_gather_single"),
    ("torch.distributed._functional_collectives", "reduce_scatter_single"),
]


class SimulatedLatency:
    """Wraps the collective entry points: each call sleeps ``seconds`` first and is counted."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        for module_name, name in WRAPPED:
            module = sys.modules[module_name]
            setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, collective: Callable[..., object]) -> Callable[..., object]:
        def delayed(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.seconds:
                time.sleep(self.seconds)
            return collective(*args, **kwargs)

        return delayed


def mesh_grads(layout: str, tensors: int, seed: int) -> list[torch.nn.Parameter]:
    """Parameters whose gradients are DTensors laid out as FSDP2 (and tensor parallel) would."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    generator = torch.Generator().manual_seed(seed)
    if layout == "fsdp2 1-D":
        mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("dp",))
        placements = [[Shard(0)], [Shard(0)]]
    else:
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        placements = [[Shard(0), Shard(1)], [Shard(0), Shard(0)], [Shard(0), Replicate()]]
    params = []
    for index in range(tensors):
        full = torch.randn(64, 32, generator=generator)
        place = placements[index % len(placements)]
        param = torch.nn.Parameter(distribute_tensor(full, mesh, place))
        param.grad = distribute_tensor(torch.randn(64, 32, generator=generator) * 10, mesh, place)
        params.append(param)
    return params


def clone(params: Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    clones = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        clones.append(q)
    return clones


def timed_side_by_side(
    candidates: dict[str, Callable[[], object]], latency: SimulatedLatency, repeats: int
) -> dict[str, dict[str, float]]:
    """Median wall ms and collectives per call of each candidate, round-robin, after barriers."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    calls: dict[str, int] = {}
    for round_index in range(repeats + 1):
        for name, action in candidates.items():
            dist.barrier()
            before = latency.calls
            start = time.perf_counter()
            action()
            elapsed = time.perf_counter() - start
            calls[name] = latency.calls - before
            if round_index:  # the first round warms up
                times[name].append(elapsed)
    return {name: {"median_ms": round(1e3 * statistics.median(times[name]), 3),
                   "collectives": calls[name]} for name in candidates}


def measure(world: int, layout: str, latencies: Sequence[float], tensors: int,
            repeats: int) -> list[dict[str, object]]:
    """One process of the benchmark (in a gloo group): a row per latency."""
    # torch's own note that its 2-D redistribution takes one all-reduce per mesh dimension
    # is what the table shows; once per rank and round is noise.
    logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
    latency = SimulatedLatency()
    ours = mesh_grads(layout, tensors, seed=0)
    theirs = clone(ours)
    norm = gradclip.clip_grad_norm_(clone(ours), 1.0)
    reference = torch.nn.utils.clip_grad_norm_(clone(ours), 1.0).full_tensor()
    torch.testing.assert_close(norm, reference, rtol=1e-5, atol=0)
    rows = []
    for seconds in latencies:
        latency.seconds = seconds
        figures = timed_side_by_side({
            "gradclip": lambda: gradclip.clip_grad_norm_(ours, 1.0),
            "torch": lambda: torch.nn.utils.clip_grad_norm_(theirs, 1.0),
        }, latency, repeats)
        rows.append({"layout": layout, "ranks": world, "latency_ms": seconds * 1e3, **{
            f"{name}_{key}": value for name, result in figures.items()
            for key, value in result.items()}})
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", default="0,1,5",
                        help="simulated latency per collective, comma-separated (ms)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per candidate")
    parser.add_argument("--tensors", type=int, default=64, help="parameters per rank")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few tensors, 1 call")
    parser.add_argument("--json", default="benchmarks/results.json",
                        help="file whose \"latency\" entry receives the figures")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as Markdown to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    latencies = [float(ms) / 1e3 for ms in args.latency_ms.split(",")]
    tensors, repeats = (6, 1) if args.quick else (args.tensors, args.repeats)
    load_before = load_average()
    print(f"torch.set_num_threads({args.threads}) per process, gloo; load average {load_before}")
    rows = []
    for layout, world in (("fsdp2 1-D", 2), ("fsdp x tp 2-D", 4)):
        rows.extend(run_on_gloo(measure, world, world, layout, latencies, tensors, repeats,
                                threads=args.threads))
    table = [("mesh", "latency ms", "gradclip ms", "torch ms", "torch / gradclip",
              "collectives (gradclip / torch)")]
    for row in rows:
        table.append((f"{row['layout']} ({row['ranks']} ranks)", f"{row['latency_ms']:g}",
                      f"{row['gradclip_median_ms']:.2f}", f"{row['torch_median_ms']:.2f}",
                      f"{ratio(row['torch_median_ms'], row['gradclip_median_ms']):.2f}",
                      f"{row['gradclip_collectives']} / {row['torch_collectives']}"))
    print_table(f"clip_grad_norm_ of {tensors} DTensor gradients (64 x 32) per rank, "
                f"median of {repeats} (wall clock)", table)
    load_after = load_average()
    print(f"load average after: {load_after}")
    payload = {"command": " ".join(["python -m benchmarks.latency", *argv]),
               "machine": machine(), "threads": args.threads, "repeats": repeats,
               "tensors": tensors, "load_average_before": load_before,
               "load_average_after": load_after, "rows": rows}
    update_json(args.json, {"latency": payload})
    if args.markdown is not None:
        write_markdown(args.markdown, latency_table(payload))
    return payload


if __name__ == "__main__":
    main()
