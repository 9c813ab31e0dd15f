"""The global norm of many small DTensors: gradclip against torch, on a 2-rank gloo mesh.

torch #169445: ``torch.nn.utils.get_total_norm`` over DTensors stacks the per-tensor norms
as DTensors, which grows quadratically with the number of tensors (more than 90 minutes for
20k parameters was reported). gradclip groups the local contributions by the ranks they
must be reduced over and issues one all-reduce per group.

Two gloo processes each hold, for every size, ``count`` parameters of 16 elements sharded
``Shard(0)`` over a 1-D mesh of both ranks (``DTensor.from_local``: no collective to build
them). Each call is timed on rank 0 (wall clock, after a barrier), median of ``--repeats``;
torch is only timed up to ``--torch-max`` tensors (its time grows too fast beyond), and both
norms are checked equal where both ran. The collectives of one call are counted with
``CommDebugMode``. ``python -m benchmarks.meshes [--threads 1] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

import gradclip
from benchmarks.common import machine, print_table, ratio, run_on_gloo, update_json

ELEMENTS = 16
WORLD_SIZE = 2


def sharded_grads(count: int, mesh) -> list[torch.Tensor]:
    """``count`` DTensors of ``ELEMENTS`` elements, this rank's half of each."""
    from torch.distributed.tensor import DTensor, Shard

    generator = torch.Generator().manual_seed(dist.get_rank())
    return [DTensor.from_local(torch.randn(ELEMENTS // WORLD_SIZE, generator=generator), mesh,
                               [Shard(0)], run_check=False) for _ in range(count)]


def timed(action: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall seconds of ``action()`` over ``repeats`` calls (all ranks start together)."""
    times, result = [], None
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def collectives(action: Callable[[], object]) -> int:
    from torch.distributed.tensor.debug import CommDebugMode

    mode = CommDebugMode()
    with mode:
        action()
    return sum(mode.get_comm_counts().values())


def measure(sizes: Sequence[int], torch_max: int, repeats: int) -> list[dict[str, object]]:
    """One process of the benchmark (in a gloo group): a row per size."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD_SIZE,))
    rows = []
    for count in sizes:
        grads = sharded_grads(count, mesh)
        ours, norm = timed(lambda grads=grads: gradclip.get_total_norm(grads), repeats)
        row = {"tensors": count, "gradclip_s": ours,
               "gradclip_collectives": collectives(lambda g=grads: gradclip.get_total_norm(g))}
        if count <= torch_max:
            theirs, reference = timed(
                lambda grads=grads: torch.nn.utils.get_total_norm(grads).full_tensor(), repeats)
            torch.testing.assert_close(norm, reference, rtol=1e-5, atol=0)
            row.update(torch_s=theirs, ratio=ratio(theirs, ours), torch_collectives=collectives(
                lambda g=grads: torch.nn.utils.get_total_norm(g).full_tensor()))
        rows.append(row)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.meshes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per size")
    parser.add_argument("--sizes", default="500,2000,5000,20000",
                        help="comma-separated tensor counts")
    parser.add_argument("--torch-max", type=int, default=5000,
                        help="largest count torch is timed at (its time grows quadratically)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--json", default="benchmarks/results.json",
                        help="file whose \"meshes\" entry receives the figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    sizes = [20, 50] if args.quick else [int(size) for size in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    rows = run_on_gloo(measure, WORLD_SIZE, sizes, args.torch_max, repeats,
                       threads=args.threads)
    print(f"torch.set_num_threads({args.threads}) per process, {WORLD_SIZE} gloo processes, "
          f"load average {os.getloadavg()[0]:.2f}")
    table = [("tensors", "gradclip s", "torch s", "torch / gradclip", "collectives (ours/torch)")]
    for row in rows:
        table.append((str(row["tensors"]), f"{row['gradclip_s']:.4f}",
                      f"{row['torch_s']:.4f}" if "torch_s" in row else "not run",
                      f"{row['ratio']:.1f}x" if "ratio" in row else "-",
                      f"{row['gradclip_collectives']}/{row.get('torch_collectives', '-')}"))
    print_table(f"get_total_norm of DTensors of {ELEMENTS} elements, Shard(0) on 2 ranks "
                f"(median of {repeats})", table)
    payload = {"command": "python -m benchmarks.meshes " + " ".join(argv or []),
               "machine": machine(), "threads": args.threads, "repeats": repeats, "rows": rows}
    update_json(args.json, {"meshes": payload})
    return payload


if __name__ == "__main__":
    main()
