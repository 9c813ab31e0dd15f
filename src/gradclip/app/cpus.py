"""How the application's own processes share the CPUs: no spinning, no more threads than cores.

Two rules, measured on a 2-core machine beside two busy processes (docs/performance.md):

- **OpenMP threads wait passively.** torch's CPU kernels run on an OpenMP team; by default an
  idle member spins for a while before it sleeps, which burns the core another process (or
  its own other thread) needs. ``passive_openmp`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the
  user set a policy) in the console script, before torch is imported: the OpenMP runtime
  reads it once, when it loads. Worker processes inherit it.
- **Threads never outnumber the cores.** A run uses at most ``usable_cpus()`` threads, and
  ``compare``, ``benchmark`` and ``demo`` run at most that many processes, each with
  ``threads_per_job`` threads, so jobs x threads <= cores.

Only the standard library: the console script imports this module before torch.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def passive_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, unless already set.

    Effective only before the OpenMP runtime loads (before ``import torch``).
    """
    environ.setdefault(WAIT_POLICY, "PASSIVE")


def parallel_jobs(jobs: int, cpus: int | None = None) -> int:
    """``jobs`` processes at a time, but no more than the CPUs (``None``: ``usable_cpus()``)."""
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    return min(jobs, usable_cpus() if cpus is None else cpus)


def threads_per_job(threads: int, jobs: int = 1, cpus: int | None = None) -> int:
    """Threads for each of ``jobs`` processes: ``threads``, cut so that jobs x threads <= cpus.

    Rule: ``max(1, min(threads, cpus // jobs))``; at least one thread each, so ``jobs`` must
    itself be at most ``cpus`` (``parallel_jobs``) for the bound to hold.

    Raises:
        ValueError: ``threads`` or ``jobs`` is not positive.
    """
    if threads < 1 or jobs < 1:
        raise ValueError(f"threads and jobs must be positive integers, got threads={threads}, "
                         f"jobs={jobs}")
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, min(threads, cpus // jobs))
