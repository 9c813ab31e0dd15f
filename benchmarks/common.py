"""Timing helpers shared by the benchmarks: interleaved repeats, medians, ratios, output.

Candidates are timed round-robin (one run of each per round, ``repeats`` rounds after
``warmup`` rounds), so a slow spell of a shared machine hits every candidate alike, and
each is summarised by its median. The clock is the process's CPU time by default: on a
machine shared with other jobs, time spent waiting for a core is not the code's cost (with
one thread and an idle machine, CPU time and wall time agree).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch

CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def interleaved_medians(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.process_time,
) -> dict[str, float]:
    """Median time in seconds (by ``clock``) of each candidate, timed round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, run in candidates.items():
            start = clock()
            run()
            elapsed = clock() - start
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: statistics.median(times) for name, times in samples.items()}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, rounded for reading."""
    return round(numerator / denominator, 3)


def milliseconds(seconds: dict[str, float]) -> dict[str, float]:
    return {name: round(value * 1e3, 4) for name, value in seconds.items()}


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded (``None`` where the OS has none)."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 2) for value in os.getloadavg()]


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    """Print ``rows`` (the first is the header) as aligned columns under ``title``."""
    print(f"\n{title}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def write_json(path: str | Path, payload: dict[str, object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def update_json(path: str | Path, entries: dict[str, object]) -> None:
    """Write ``entries`` into the JSON object at ``path``, keeping its other entries."""
    path = Path(path)
    existing: dict[str, object] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            existing = {}
    existing.update(entries)
    write_json(path, existing)


def thread_counts(text: str) -> list[int]:
    """``--threads 1,2`` as a list; anything else exits with one line."""
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        sys.exit(f"--threads must be comma-separated integers, got {text!r}")


def free_port() -> int:
    """A TCP port free on this machine now (for a gloo rendezvous of benchmark processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_on_gloo(measure: Callable[..., object], world: int, *args: object,
                threads: int = 1) -> object:
    """``measure(*args)`` in ``world`` gloo processes of ``threads`` torch threads each.

    Args:
        measure: a module-level function (it is pickled); it runs inside the process group.
        world: the number of processes.
        *args: its arguments.
        threads: ``torch.set_num_threads`` in each process.

    Returns:
        What ``measure`` returned on rank 0.
    """
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_gloo_process, args=(world, free_port(), threads, measure, args, queue),
             nprocs=world, join=True)
    return queue.get()


def _gloo_process(rank: int, world: int, port: int, threads: int,
                  measure: Callable[..., object], args: tuple, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=30))
    try:
        result = measure(*args)
        if rank == 0:
            queue.put(result)
        dist.barrier()  # no rank leaves while another still talks to it
    finally:
        dist.destroy_process_group()
    leave_without_finalizing()


def leave_without_finalizing() -> None:
    """End a spawned gloo process now, skipping the interpreter's shutdown.

    A gloo worker thread can still be releasing its last collective (tensors that hold Python
    objects) when the interpreter shuts down; it then needs the GIL, cannot have it, and the
    process aborts ("terminate called without an active exception", SIGABRT) after all its
    work is done: about one run in 30 of ``benchmarks.meshes --quick`` on 2 cores, seen in
    a core dump as ``ProcessGroupGloo::AsyncWork::~AsyncWork`` under ``take_gil`` during
    ``Py_FinalizeEx``. Everything is already written (the result queue writes synchronously).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
