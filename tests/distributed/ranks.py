"""Run named checks for real on N gloo processes; each test then asserts one recorded outcome.

Process start-up dominates the cost of a multi-process test on a small machine, so one spawn
runs a whole table of checks, each rank writing ``ok`` or the traceback of every check to a
JSON file; the test of a check reads its outcome on every rank. Robust on a loaded machine:
a free port per spawn, a generous collective timeout (a check failing on one rank only
leaves the others in a collective until then), a barrier after every check, and an abort
while the group is torn down, after every outcome was written, is not a failure.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import leave_without_finalizing
from tests.distributed.spawn import free_port

COLLECTIVE_TIMEOUT = timedelta(seconds=120)

Checks = dict[str, Callable[[], None]]


def _run_checks(rank: int, world_size: int, checks: Checks, port: int, out_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
    outcomes = {}
    try:
        for name, check in checks.items():
            try:
                check()
                outcomes[name] = "ok"
            except Exception:  # recorded, and asserted by the test of that check
                outcomes[name] = traceback.format_exc(limit=6)
            try:
                dist.barrier()
            except RuntimeError:  # another rank failed mid-collective: the group is broken
                outcomes[name] += "\n(the barrier after it timed out: a rank failed)"
                break
    finally:
        Path(f"{out_file}-{rank}.json").write_text(json.dumps(outcomes))
        dist.destroy_process_group()
    leave_without_finalizing()  # a gloo thread may otherwise abort the shut-down interpreter


def run_checks(checks: Checks, world_size: int, out_dir: str | Path, tag: str) -> dict[str, list[str]]:
    """Run every check in turn on ``world_size`` gloo processes; outcomes by check, by rank.

    Args:
        checks: check name -> a module-level function of no arguments (picklable).
        world_size: the number of processes.
        out_dir: where the outcome files go.
        tag: a name for this spawn's files.

    Returns:
        For each check, the outcome on each rank: ``"ok"`` or a traceback.
    """
    out_file = str(Path(out_dir, tag))
    files = [Path(f"{out_file}-{rank}.json") for rank in range(world_size)]
    try:
        mp.spawn(_run_checks, args=(world_size, checks, free_port(), out_file),
                 nprocs=world_size, join=True)
    except mp.ProcessExitedException:
        # gloo may abort a process while the group is torn down, after every outcome was
        # written (seen rarely on a loaded machine); a crash during the checks is a failure.
        if not all(file.is_file() for file in files):
            raise
    by_rank = [json.loads(file.read_text()) for file in files]
    return {name: [ranks.get(name, "not run") for ranks in by_rank] for name in checks}


def assert_ok(outcomes: dict[str, list[str]], check: str) -> None:
    """Fail with the traceback of the first rank on which ``check`` did not pass."""
    for rank, outcome in enumerate(outcomes[check]):
        assert outcome == "ok", f"{check}, rank {rank}:\n{outcome}"


def assert_same_on_every_rank(value: torch.Tensor, what: str) -> None:
    """``value`` is bit-identical on every rank (gathered and compared)."""
    gathered = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, value.contiguous())
    for rank, other in enumerate(gathered):
        # NaN in the same places counts as equal (SpikeSkip's empty history slots).
        assert torch.equal(gathered[0].nan_to_num(0.0), other.nan_to_num(0.0)) and torch.equal(
            gathered[0].isnan(), other.isnan()
        ), f"{what} differs between rank 0 and rank {rank}: {gathered[0]} vs {other}"


def assert_state_same_on_every_rank(state: dict, prefix: str = "") -> None:
    """Every tensor of a clipper's ``state_dict`` is bit-identical on every rank (a chain's
    member states included)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert_same_on_every_rank(value, f"state {prefix}{key!r}")
        elif key == "members":
            for index, member in enumerate(value):
                assert_state_same_on_every_rank(member, f"{prefix}members[{index}].")


def state_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a clipper's ``state_dict`` by path, a chain's members' included."""
    tensors = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[f"{prefix}{key}"] = value
        elif key == "members":
            for index, member in enumerate(value):
                tensors.update(state_tensors(member, f"{prefix}members[{index}]."))
    return tensors


def collectives_during(action: Callable[[], object]) -> tuple[object, int]:
    """``action()``'s result and how many collectives it issued (``CommDebugMode``: c10d ops
    and functional collectives, DTensor redistributions included)."""
    from torch.distributed.tensor.debug import CommDebugMode

    mode = CommDebugMode()
    with mode:
        result = action()
    return result, sum(mode.get_comm_counts().values())
