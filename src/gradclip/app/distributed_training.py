"""Multi-process training under ``torchrun``: DDP or FSDP2, one global batch split over ranks.

``torchrun --nproc_per_node N -m gradclip train ... --distributed ddp|fsdp`` runs the same
loop as one process (:class:`gradclip.app.loop.Trainer`) on every rank, with:

- **the process group** from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``): NCCL when the run uses CUDA (rank ``r`` on ``cuda:LOCAL_RANK``), gloo on CPU;
- **the data**: micro-batch ``i`` is still ``task.train_batch(i)``, a pure function of
  ``(seed, i)`` of ``--batch-size`` rows (the *global* batch); rank ``r`` keeps its slice
  ``r`` of ``N`` contiguous slices, so ranks see disjoint rows and together the whole batch.
  Its loss is weighted by ``N * rows_r / rows`` so that the gradient the wrapper averages
  over ranks is the gradient of the full batch's mean loss, even for uneven slices;
- **the model**: ``DistributedDataParallel``, or FSDP2 (``fully_shard`` on every recurrent,
  linear and embedding layer, then on the root) with the optimizer built over the sharded
  parameters;
- **clipping**: every rank takes the same decision. DDP's gradients are already identical;
  FSDP2's are DTensors, whose norms the functional ops all-reduce. The logged loss is the
  mean over ranks, and "clipped", "skipped" and "non-finite loss" are OR-ed over ranks, so
  every rank steps, skips and stops together;
- **files**: rank 0 alone writes ``config.json``, ``metrics.jsonl``, ``summary.json``, the
  progress bar and the printed summary (other ranks write their copies into a private scratch
  folder, removed at the end). ``checkpoint.pt`` holds the consolidated model weights (so
  ``gradclip eval`` works on any run); for FSDP the exact sharded model and optimizer state go
  to ``sharded-<step>/`` with ``torch.distributed.checkpoint`` (DCP), and ``checkpoint.pt``
  names that folder. Every rank's RNG states are saved, so ``--resume`` under torchrun
  continues exactly. The run directory must be on a file system every rank can read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gradclip.app import checkpoint as checkpoints
from gradclip.app.clipping import clipper_from_spec
from gradclip.app.errors import UserError
from gradclip.app.loop import StepReport, Trainer
from gradclip.app.optimization import build_optimizer, build_scheduler, resolve_device
from gradclip.app.run_dir import CONFIG, SUMMARY, read_config, write_json
from gradclip.app.tasks.base import Batch

MODES = ("ddp", "fsdp")
SHARDED_PREFIX = "sharded-"


@dataclasses.dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run directory and prints."""
        return self.rank == 0


def torchrun_launch() -> Launch | None:
    """The launch torchrun describes in the environment, or ``None`` outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return Launch(rank, world_size, int(os.environ.get("LOCAL_RANK", rank)))


def rank_device(setting: str, launch: Launch) -> torch.device:
    """``--device`` for this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (one GPU a rank)."""
    device = resolve_device(setting)
    if device.type == "cuda" and setting in ("auto", "cuda"):
        device = torch.device("cuda", launch.local_rank)
    return device


@contextlib.contextmanager
def process_group(launch: Launch, device: torch.device) -> Iterator[None]:
    """The default process group for the run (NCCL on CUDA, gloo on CPU), destroyed after."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


class RankSlice:
    """The task as one rank sees it: its slice of every global batch; the rest passes through.

    Slice ``r`` of ``N`` is ``tensor_split(rows, N)[r]``; its loss is scaled by
    ``N * rows_r / rows`` (the loop draws a batch, then takes its loss, one at a time).
    """

    def __init__(self, task: Any, launch: Launch):
        self.task, self.launch, self.share = task, launch, 1.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def train_batch(self, index: int) -> Batch:
        batch = self.task.train_batch(index)
        rows, world_size = batch.inputs.shape[0], self.launch.world_size
        if rows < world_size:  # every rank needs rows: repeat the few there are
            repeat = torch.arange(world_size) % rows
            batch = Batch(batch.inputs[repeat], None if batch.lengths is None
                          else batch.lengths[repeat], batch.targets[repeat])
            rows = world_size
        part = torch.arange(rows).tensor_split(world_size)[self.launch.rank]
        self.share = world_size * part.numel() / rows
        return Batch(batch.inputs[part], None if batch.lengths is None else batch.lengths[part],
                     batch.targets[part])

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return self.task.loss(outputs, batch) * self.share


def wrap_model(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """DDP, or FSDP2 on each recurrent/linear/embedding layer and then the root."""
    if mode == "ddp":
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in list(model.modules())[1:]:
        if isinstance(layer, (nn.RNNBase, nn.Linear, nn.Embedding)):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


class DistributedTrainer(Trainer):
    """The training loop on one rank of a DDP or FSDP2 run (see the module docstring)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], task: Any, launch: Launch,
                 mode: str):
        self.launch, self.mode, self.shared_run_dir = launch, mode, Path(run_dir)
        self.sharded_folder: str | None = None  # the DCP folder last written
        if mode == "fsdp" and config["train"]["amp"] == "fp16":
            raise UserError("--amp fp16 is not supported with --distributed fsdp; use --amp bf16")
        settings = {**config["train"], "device": str(rank_device(config["train"]["device"],
                                                                 launch))}
        own_dir = run_dir if launch.is_writer else Path(tempfile.mkdtemp(prefix="gradclip-rank"))
        super().__init__(own_dir, {**config, "train": settings}, RankSlice(task, launch))
        self.model = wrap_model(self.model, mode, self.device)
        self.optimizer = build_optimizer(settings["optimizer"], self.model.parameters(),
                                         settings["lr"], settings["momentum"],
                                         settings["weight_decay"])
        self.scheduler = build_scheduler(self.optimizer, settings["schedule"],
                                         settings["total_steps"])
        if launch.rank > 0:  # independent dropout masks on each rank
            torch.manual_seed(settings["seed"] + 7919 * launch.rank)

    def train(self, checkpoint: dict[str, Any] | None = None, progress: bool | None = None
              ) -> dict[str, Any]:
        try:
            return super().train(checkpoint, progress if self.launch.is_writer else False)
        finally:
            if not self.launch.is_writer:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def report(self, loss: Tensor, stats: Any, skipped: Tensor, nonfinite_loss: Tensor
               ) -> StepReport:
        """The step's numbers, agreed by every rank: mean loss, flags OR-ed over ranks."""
        values = torch.stack([loss.float(), stats.clipped.to(self.device).float(),
                              skipped.float(), nonfinite_loss.float()])
        dist.all_reduce(values)
        stats = dataclasses.replace(stats, clipped=values[1] > 0)
        return super().report(values[0] / self.launch.world_size, stats, values[2] > 0,
                              values[3] > 0)

    # ----------------------------------------------------------------- checkpoints
    def save(self) -> None:
        """Rank 0 writes ``checkpoint.pt`` (consolidated weights); FSDP adds DCP shards first."""
        state = self.common_state()
        if self.mode == "fsdp":
            state.update(self.save_sharded())
        else:
            state.update(model=self.model.module.state_dict(),
                         optimizer=self.optimizer.state_dict())
        if self.launch.is_writer:
            checkpoints.save_checkpoint(self.shared_run_dir, state)
            if self.counters.status == "running":
                write_json(self.shared_run_dir / SUMMARY, self.summary(None))
            if self.mode == "fsdp":
                remove_stale_shards(self.shared_run_dir, keep=state["sharded"])
        dist.barrier()

    def common_state(self) -> dict[str, Any]:
        """What every checkpoint holds besides model and optimizer (and every rank's RNGs)."""
        rng_per_rank: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(rng_per_rank, checkpoints.rng_states())
        return {
            "scheduler": self.scheduler.state_dict(),
            "clipper": self.clipper.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "step": self.counters.step,
            "next_batch_index": self.counters.next_batch_index,
            "counters": dataclasses.asdict(self.counters),
            "rng": rng_per_rank[0],
            "rng_per_rank": rng_per_rank,
            "distributed": {"mode": self.mode, "world_size": self.launch.world_size},
        }

    def save_sharded(self) -> dict[str, Any]:
        """Write this step's FSDP model and optimizer shards with DCP; gather full weights."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )

        folder = f"{SHARDED_PREFIX}{self.counters.step:08d}"
        if folder != self.sharded_folder:  # the end of a run saves its last step again
            model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state},
                     checkpoint_id=self.shared_run_dir / folder)
            self.sharded_folder = folder
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                         cpu_offload=True))
        return {"model": full, "optimizer": {"sharded": folder}, "sharded": folder}

    def load_weights(self, state: dict[str, Any]) -> None:
        if self.mode == "fsdp":
            self.load_sharded(state)
        else:
            self.model.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])

    def restore_rng(self, state: dict[str, Any]) -> None:
        rng_per_rank = state.get("rng_per_rank") or [state["rng"]]
        same_layout = len(rng_per_rank) == self.launch.world_size
        checkpoints.restore_rng_states(rng_per_rank[self.launch.rank if same_layout else 0])

    def load_sharded(self, state: dict[str, Any]) -> None:
        """Read the DCP shards ``checkpoint.pt`` names into the sharded model and optimizer."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        folder = state.get("sharded")
        if folder is None or not (self.shared_run_dir / folder).is_dir():
            raise UserError(f"corrupt checkpoint in {self.shared_run_dir}: its sharded FSDP state "
                            f"{folder or '(none)'} is missing")
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        sharded = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(sharded, checkpoint_id=self.shared_run_dir / folder)
        set_state_dict(self.model, self.optimizer, model_state_dict=sharded["model"],
                       optim_state_dict=sharded["optimizer"])


def remove_stale_shards(run_dir: Path, keep: str) -> None:
    """Delete ``sharded-*`` folders other than ``keep`` (after ``checkpoint.pt`` points to it)."""
    for folder in run_dir.glob(f"{SHARDED_PREFIX}*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------- the command
def launch_for(args: argparse.Namespace) -> tuple[Launch, str] | None:
    """``(launch, mode)`` when this ``gradclip train`` is a distributed run, else ``None``.

    A new run takes its mode from ``--distributed``; a resumed one from its ``config.json``.
    A distributed mode outside torchrun, or several processes without one, is a ``UserError``.
    """
    launch, mode = torchrun_launch(), args.distributed
    if args.resume is not None:
        saved = read_config(args.resume).get("distributed")
        mode = saved["mode"] if saved else "none"
    if mode == "none":
        if launch is not None and launch.world_size > 1:
            if not launch.is_writer:
                raise SystemExit(2)  # rank 0 says it, once
            raise UserError("running under torchrun with several processes: pass "
                            "--distributed ddp or --distributed fsdp")
        return None
    if launch is None:
        raise UserError(f"--distributed {mode} needs torchrun: torchrun --nproc_per_node N "
                        f"-m gradclip train ... --distributed {mode}")
    return launch, mode


def run(args: argparse.Namespace, launch: Launch, mode: str, progress: bool | None) -> int:
    """``gradclip train`` on one rank of a DDP/FSDP run; only rank 0 prints."""
    from gradclip.app.report import format_summary
    from gradclip.app.tasks import load_task
    from gradclip.app.tensorboard import attach_tensorboard

    tensorboard = getattr(args, "tensorboard", False)
    try:
        if tensorboard and mode == "fsdp":
            raise UserError("--tensorboard is not supported with --distributed fsdp (its "
                            "histograms need whole tensors); use it with ddp")
        checkpoint = task = None
        if args.resume is not None:
            run_dir, config = args.resume, read_config(args.resume)
            checkpoint = checkpoints.load_checkpoint(run_dir)
            task = load_task(config["task"], run_dir)
        else:
            clipper_from_spec(args.clip)
        setting = config["train"]["device"] if args.resume is not None else args.device
        device = rank_device(setting, launch)
        with process_group(launch, device):
            if args.resume is None:
                run_dir, config, task = new_run(args, launch, mode)
            if launch.is_writer:
                print(f"run directory: {run_dir} ({mode}, {launch.world_size} processes)")
            trainer = DistributedTrainer(run_dir, config, task, launch, mode)
            writer = attach_tensorboard(trainer, run_dir) if tensorboard and launch.is_writer \
                else None
            summary = trainer.train(checkpoint, progress=progress)
            if writer is not None:
                writer.close()
    except UserError:
        if not launch.is_writer:
            raise SystemExit(2) from None  # rank 0 says it, once
        raise
    if launch.is_writer:
        print(format_summary(summary, config))
    return 0


def new_run(args: argparse.Namespace, launch: Launch, mode: str
            ) -> tuple[Path, dict[str, Any], Any]:
    """Rank 0 checks the options and creates the run directory; the others follow it."""
    from gradclip.app.commands.train import prepare_new_run
    from gradclip.app.tasks import make_task

    message: list[Any] = [None]
    if launch.is_writer:
        try:
            run_dir, config, task = prepare_new_run(args)
            config["distributed"] = {"mode": mode, "world_size": launch.world_size}
            write_json(run_dir / CONFIG, config)
            message = [str(run_dir)]
        except UserError as error:
            message = [error]
    dist.broadcast_object_list(message, src=0)
    if isinstance(message[0], UserError):
        raise message[0]
    run_dir = Path(message[0])
    if not launch.is_writer:  # the same task, built from the same flags and seed
        config, task = read_config(run_dir), make_task(args.task, args)
    return run_dir, config, task
