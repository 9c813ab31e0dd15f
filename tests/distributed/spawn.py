"""Run a test scenario for real in two processes with the gloo backend."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import leave_without_finalizing

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, scenario: Callable[[int, int], None], port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    scenario(rank, WORLD_SIZE)
    # Both ranks reach here before either tears the group down: a rank leaving while the
    # other still talks to it makes gloo abort on a loaded machine.
    dist.barrier()
    dist.destroy_process_group()
    leave_without_finalizing()  # a gloo thread may otherwise abort the shut-down interpreter


def run_on_two_ranks(scenario: Callable[[int, int], None]) -> None:
    """Run ``scenario(rank, world_size)`` in two gloo processes; a failure on either re-raises."""
    mp.spawn(_entry, args=(scenario, free_port()), nprocs=WORLD_SIZE, join=True)
