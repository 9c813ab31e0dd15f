"""A context manager that fails on any host synchronisation, provable on the CPU.

``.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` and ``if t:`` on a tensor all dispatch to
``aten._local_scalar_dense``: the op that copies a device scalar to the host (a sync on CUDA).
Recording it on the CPU proves that code never reads a tensor on the host, without a GPU.
What the mode sees is the Python-level call of each op: a read made inside an op's own C++
CPU kernel (``quantile``'s range check of ``q``, which upstream skips on accelerators
precisely to avoid the sync) is not seen; ``test_cuda_sync.py`` checks the device itself.

    with forbid_host_sync():
        clipper.clip_(model.parameters())
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default}


class HostSyncRecorder(TorchDispatchMode):
    """Records every op that reads a tensor's value on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.host_reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.host_reads.append(str(func))
        return func(*args, **(kwargs or {}))


@contextmanager
def forbid_host_sync():
    """Fail (``AssertionError``) if the block read any tensor value on the host."""
    recorder = HostSyncRecorder()
    with recorder:
        yield recorder
    assert not recorder.host_reads, f"host syncs: {recorder.host_reads}"

