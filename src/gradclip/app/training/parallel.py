"""Where a run's processes sit and how they share the work: single process, DDP or FSDP2.

``torchrun --nproc_per_node N -m gradclip train ... --distributed ddp|fsdp`` runs the same
``Trainer`` on every rank; everything that differs between
one process and many lives in the small ``Parallel`` object it is given:

- **the process group** from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``): NCCL when the run uses CUDA (rank ``r`` on ``cuda:LOCAL_RANK``), gloo on CPU;
- **the model**: wrapped before the optimizer is built: ``DistributedDataParallel``, or FSDP2
  (``fully_shard`` on every recurrent, linear and embedding layer, then on the root);
- **the data**: micro-batch ``i`` is still ``task.train_batch(i)``, a pure function of
  ``(seed, i)`` of ``--batch-size`` rows (the *global* batch); rank ``r`` keeps slice ``r`` of
  ``N`` contiguous slices, and its loss is weighted by ``N * rows_r / rows`` so that the
  gradient the wrapper averages over ranks is the gradient of the full batch's mean loss;
- **accumulation**: ``no_sync`` on every micro-batch but the last (DDP's ``no_sync``, FSDP2's
  ``set_requires_gradient_sync``), so gradients are reduced once per optimizer step;
- **agreement**: the logged loss is the mean over ranks, and "clipped", "skipped" and
  "non-finite loss" are OR-ed over ranks in one all-reduce, so every rank steps, skips and
  stops together (FSDP2's gradient norms are DTensor norms, all-reduced by the library);
- **files**: rank 0 alone writes (``is_writer``); the other ranks write nothing but their
  DCP shards. ``checkpoint.pt`` holds the consolidated model weights (so ``gradclip eval``
  works on any run); for FSDP the exact sharded model and optimizer state go to
  ``sharded-<step>/`` with ``torch.distributed.checkpoint`` (DCP), and ``checkpoint.pt`` names
  that folder. Every rank's RNG states are saved, so ``--resume`` under torchrun continues
  exactly. The run directory must be on a file system every rank can read.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gradclip.app.choices import PARALLEL_MODES
from gradclip.app.config import TrainConfig
from gradclip.app.errors import UserError
from gradclip.app.tasks.base import Batch
from gradclip.app.training import checkpoint as checkpoints
from gradclip.app.training.setup import resolve_device

MODES = PARALLEL_MODES
SHARDED_PREFIX = "sharded-"


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_launch() -> Launch | None:
    """The launch torchrun describes in the environment, or ``None`` outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return Launch(rank, world_size, int(os.environ.get("LOCAL_RANK", rank)))


class Parallel:
    """One process: no wrapping, the whole batch, no collectives; the base of the others."""

    mode = "none"

    def __init__(self, device: torch.device, launch: Launch | None = None):
        self.device = device
        self.launch = launch or Launch(0, 1, 0)

    @staticmethod
    def single(device_setting: str) -> Parallel:
        return Parallel(resolve_device(device_setting))

    @staticmethod
    def for_run(mode: str, device_setting: str) -> Parallel:
        """The ``Parallel`` of a ``gradclip train`` run (``mode`` from the flag or config).

        Raises:
            UserError: a distributed mode outside torchrun, or several processes without one.
        """
        launch = torchrun_launch()
        if mode == "none":
            if launch is not None and launch.world_size > 1:
                if launch.rank > 0:
                    raise SystemExit(2)  # rank 0 says it, once
                raise UserError("running under torchrun with several processes: pass "
                                "--distributed ddp or --distributed fsdp")
            return Parallel.single(device_setting)
        if launch is None:
            raise UserError(f"--distributed {mode} needs torchrun: torchrun --nproc_per_node N "
                            f"-m gradclip train ... --distributed {mode}")
        device = resolve_device(device_setting)
        if device.type == "cuda" and device_setting in ("auto", "cuda"):
            device = torch.device("cuda", launch.local_rank)  # one GPU a rank
        kind = DataParallel if mode == "ddp" else FullyShardedParallel
        return kind(device, launch)

    # ------------------------------------------------------------------ who am I
    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run directory and prints."""
        return self.launch.rank == 0

    @contextlib.contextmanager
    def process_group(self) -> Iterator[None]:
        """The default process group for the run, destroyed after (nothing for one process)."""
        yield

    def check(self, train: TrainConfig) -> None:
        """Refuse settings this mode cannot run (a ``UserError``)."""

    # ------------------------------------------------------------------ the step
    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def slice_batch(self, batch: Batch) -> tuple[Batch, float]:
        """This rank's rows of the global batch and its loss weight (1: the whole batch)."""
        return batch, 1.0

    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Gradient reduction off for every micro-batch but the ``last``."""
        return contextlib.nullcontext()

    def mean_and_any(self, loss: Tensor, flags: Tensor) -> tuple[Tensor, Tensor]:
        """The mean ``loss`` over ranks and the 0/1 ``flags`` OR-ed over ranks."""
        return loss, flags

    def seed_rank(self, seed: int) -> None:
        """Independent dropout masks on each rank (rank 0 keeps ``seed``)."""

    def barrier(self) -> None:
        pass

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return value

    # ------------------------------------------------------------------ checkpoints
    def model_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path,
                    step: int) -> dict[str, Any]:
        """The ``model`` and ``optimizer`` entries of ``checkpoint.pt``."""
        return {"model": self.unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}

    def load_model_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any], run_dir: Path) -> None:
        self.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    def after_save(self, run_dir: Path, state: dict[str, Any]) -> None:
        """Called on the writer once ``checkpoint.pt`` is in place."""

    def rng_state(self) -> dict[str, Any]:
        return {"rng": checkpoints.rng_states()}

    def restore_rng(self, state: dict[str, Any]) -> None:
        checkpoints.restore_rng_states(state["rng"])


class DataParallel(Parallel):
    """DDP: the model replicated on every rank, gradients all-reduced once per step."""

    mode = "ddp"

    @contextlib.contextmanager
    def process_group(self) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if cuda else "gloo", rank=self.rank,
                                world_size=self.world_size,
                                device_id=self.device if cuda else None)
        try:
            yield
            # the model, its mesh and gloo's pending work freed while the interpreter is
            # whole, and on every rank before any tears the group down: gloo's threads
            # otherwise abort the process at exit ("terminate called without an active
            # exception", about one run in five on a busy machine)
            gc.collect()
            dist.barrier()
        finally:
            dist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def unwrap(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, nn.parallel.DistributedDataParallel), "wrap() made it"
        return model.module

    def slice_batch(self, batch: Batch) -> tuple[Batch, float]:
        """Slice ``r`` of ``N`` is ``tensor_split(rows, N)[r]``, weighted ``N * rows_r / rows``."""
        rows, world_size = batch.inputs.shape[0], self.world_size
        if rows < world_size:  # every rank needs rows: repeat the few there are
            batch = take_rows(batch, torch.arange(world_size) % rows)
            rows = world_size
        part = torch.arange(rows).tensor_split(world_size)[self.rank]
        return take_rows(batch, part), world_size * part.numel() / rows

    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        assert isinstance(model, nn.parallel.DistributedDataParallel), "wrap() made it"
        return contextlib.nullcontext() if last else model.no_sync()

    def mean_and_any(self, loss: Tensor, flags: Tensor) -> tuple[Tensor, Tensor]:
        values = torch.cat([loss.reshape(1), flags])
        dist.all_reduce(values)  # one collective for the whole step report
        return values[0] / self.world_size, values[1:] > 0

    def seed_rank(self, seed: int) -> None:
        if self.rank > 0:
            torch.manual_seed(seed + 7919 * self.rank)

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, value: Any) -> Any:
        message = [value]
        dist.broadcast_object_list(message, src=0)
        return message[0]

    def rng_state(self) -> dict[str, Any]:
        rng_per_rank: list[Any] = [None] * self.world_size
        dist.all_gather_object(rng_per_rank, checkpoints.rng_states())
        return {"rng": rng_per_rank[0], "rng_per_rank": rng_per_rank}

    def model_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path,
                    step: int) -> dict[str, Any]:
        return {**super().model_state(model, optimizer, run_dir, step), **self.layout()}

    def layout(self) -> dict[str, Any]:
        """How the checkpoint was written: the mode and the number of ranks."""
        return {"distributed": {"mode": self.mode, "world_size": self.world_size}}

    def restore_rng(self, state: dict[str, Any]) -> None:
        rng_per_rank = state.get("rng_per_rank") or [state["rng"]]
        same_layout = len(rng_per_rank) == self.world_size
        checkpoints.restore_rng_states(rng_per_rank[self.rank if same_layout else 0])


class FullyShardedParallel(DataParallel):
    """FSDP2: parameters sharded over ranks as DTensors; checkpoints through DCP."""

    mode = "fsdp"

    def __init__(self, device: torch.device, launch: Launch | None = None):
        super().__init__(device, launch)
        self.sharded_folder: str | None = None  # the DCP folder last written

    def check(self, train: TrainConfig) -> None:
        if train.amp == "fp16":
            raise UserError("--amp fp16 is not supported with --distributed fsdp; use --amp bf16")

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for layer in list(model.modules())[1:]:
            if isinstance(layer, (nn.RNNBase, nn.Linear, nn.Embedding)):
                fully_shard(layer, mesh=mesh)
        # fully_shard returns the same module, its class now also an FSDPModule
        return cast(nn.Module, fully_shard(model, mesh=mesh))

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    @contextlib.contextmanager
    def _gradient_sync(self, model: nn.Module, enabled: bool) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule

        assert isinstance(model, FSDPModule), "wrap() made it"
        model.set_requires_gradient_sync(enabled)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return self._gradient_sync(model, enabled=last)

    def model_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path,
                    step: int) -> dict[str, Any]:
        """Write this step's shards with DCP (every rank); gather the full weights."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )
        from torch.distributed.checkpoint.state_dict_saver import save

        folder = f"{SHARDED_PREFIX}{step:08d}"
        if folder != self.sharded_folder:  # the end of a run saves its last step again
            model_state, optimizer_state = get_state_dict(model, optimizer)
            save({"model": model_state, "optimizer": optimizer_state},
                     checkpoint_id=Path(run_dir) / folder)
            self.sharded_folder = folder
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                    cpu_offload=True))
        return {"model": full, "optimizer": {"sharded": folder}, "sharded": folder,
                **self.layout()}

    def load_model_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any], run_dir: Path) -> None:
        """Read the DCP shards ``checkpoint.pt`` names into the sharded model and optimizer."""
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        from torch.distributed.checkpoint.state_dict_loader import load

        folder = shard_folder(run_dir, state.get("sharded"))
        model_state, optimizer_state = get_state_dict(model, optimizer)
        sharded: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
        load(sharded, checkpoint_id=folder)
        set_state_dict(model, optimizer, model_state_dict=sharded["model"],
                       optim_state_dict=sharded["optimizer"])

    def after_save(self, run_dir: Path, state: dict[str, Any]) -> None:
        """Delete ``sharded-*`` folders other than the one ``checkpoint.pt`` now names."""
        for folder in Path(run_dir).glob(f"{SHARDED_PREFIX}*"):
            if folder.name != state["sharded"]:
                shutil.rmtree(folder, ignore_errors=True)


def shard_folder(run_dir: Path, name: object) -> Path:
    """The DCP folder a checkpoint names, confined to the run folder.

    Raises:
        UserError: the name is not ``sharded-<8 digits>``, leaves the run folder (``..``, a
            link elsewhere), or the folder is missing.
    """
    run_dir = Path(run_dir)
    if not isinstance(name, str) or not re.fullmatch(rf"{SHARDED_PREFIX}\d{{8}}", name):
        raise UserError(f"corrupt checkpoint in {run_dir}: it names the sharded FSDP state "
                        f"{name!r}, expected a folder {SHARDED_PREFIX}<step> inside the run")
    folder = run_dir / name
    if not folder.is_dir() or folder.resolve().parent != run_dir.resolve():
        raise UserError(f"corrupt checkpoint in {run_dir}: its sharded FSDP state {name} is "
                        "missing from the run folder")
    return folder


def take_rows(batch: Batch, rows: Tensor) -> Batch:
    """The batch restricted to ``rows`` (lengths too, where the task has them)."""
    return Batch(batch.inputs[rows], None if batch.lengths is None else batch.lengths[rows],
                 batch.targets[rows])
