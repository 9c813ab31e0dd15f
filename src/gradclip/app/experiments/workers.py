"""Worker processes of ``compare``, ``benchmark`` and ``demo``: bounded, and never orphaned.

- **Bounded.** ``worker_count`` caps ``--jobs`` at the runs to train and at the usable cores
  (``gradclip.app.cpus.parallel_jobs``; ``--jobs 100000`` once started 1,202 processes for one
  run).
- **Never orphaned.** A worker dies with the process that started it, however that one ends
  (SIGKILL, a closed terminal): on Linux the kernel sends it SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``); everywhere, a watchdog thread ends it once its parent is gone
  (re-parented, or no longer alive). Orphaned workers once filled 24 GB.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from gradclip.app.cpus import parallel_jobs

# Seconds between the watchdog's looks at the parent.
WATCH_INTERVAL = 0.5
PR_SET_PDEATHSIG = 1


def worker_count(jobs: int, runs: int) -> int:
    """``jobs`` capped at ``runs`` and at the usable cores (at least 1).

    Args:
        jobs: the processes asked for (``--jobs``, ``--workers``).
        runs: the runs left to train.

    Returns:
        The processes to start.
    """
    return max(1, min(parallel_jobs(jobs), runs))


def worker_pool(jobs: int, setup: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process (``die_with_parent``).

    Args:
        jobs: the number of workers (already capped, ``worker_count``).
        setup: run in each worker after the watch is set up.
    """
    return ProcessPoolExecutor(max_workers=jobs, initializer=start_worker,
                               initargs=(os.getpid(), setup))


def start_worker(parent: int, setup: Callable[[], None] | None) -> None:
    """Worker initializer: ``die_with_parent(parent)``, then ``setup``."""
    die_with_parent(parent)
    if setup is not None:
        setup()


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends: the kernel's death signal where there is one,
    and a watchdog thread everywhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError, TypeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=watch_parent, args=(parent,), daemon=True,
                     name="gradclip-parent-watch").start()


def watch_parent(parent: int) -> None:
    """Exit at once (``os._exit``) when this process is re-parented or ``parent`` is gone."""
    while os.getppid() == parent and alive(parent):
        time.sleep(WATCH_INTERVAL)
    os._exit(1)


def alive(pid: int) -> bool:
    """A process of that id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True
