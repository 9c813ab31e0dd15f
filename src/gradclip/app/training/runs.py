"""Creating a new run folder, and opening an existing one to resume or score it.

A new run is checked completely (clipping spec, device, AMP, sizes, folder) before anything
is written. The writer then creates the folder and takes its lock (``RunLock``), builds
the task (the text task reads its CSV and learns its tokenizer), saves what the task needs to
be rebuilt, and writes ``config.json`` last: a folder with a ``config.json`` can always be
resumed. Anything that fails on the way removes the folder it created. In a multi-process
run the other ranks follow: they build the same task from the same options and seed, and
read the same ``config.json``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradclip
from gradclip.app.choices import TRANSFORMER
from gradclip.app.config import DistributedConfig, ModelConfig, RunConfig, TaskOptions, TrainConfig
from gradclip.app.errors import UserError
from gradclip.app.tasks import Task, load_task, make_task
from gradclip.app.training import checkpoint as checkpoints
from gradclip.app.training.memory import check_fits_in_memory
from gradclip.app.training.parallel import Parallel
from gradclip.app.training.rundir import (
    CONFIG,
    RunLock,
    default_run_dir,
    empty_folder,
    is_empty_folder,
    lock_holder,
    make_folder,
    os_error,
    refuse_linked_entries,
    remove_folder,
    write_json,
)
from gradclip.app.training.setup import check_amp, clipper_from_spec, resolve_device
from gradclip.app.untrusted import read_json


@dataclass(frozen=True)
class NewRun:
    """What a user asks for: the task to build, the model, the training, the folder."""

    options: TaskOptions
    model: ModelConfig
    train: TrainConfig
    run_dir: Path | None = None

    def task_options(self) -> TaskOptions:
        """The options the task is built from, naming the model it feeds (``options.model``:
        the language model reads independent windows for the transformer)."""
        return dataclasses.replace(self.options, model=self.model.cell)

    def folder(self) -> Path:
        """``run_dir``, or a new ``runs/<task>-<model>-<clip>-<time>``."""
        return self.run_dir or default_run_dir(self.options.name, self.model.cell,
                                               self.train.clip)


@dataclass
class Run:
    """An open run: its folder, configuration, task, checkpoint (``None``: from the start),
    and the folder's lock, held by the writer until ``close``; ``created``: the topmost
    folder that creating the run made (``None`` when resumed, or for an existing folder)."""

    run_dir: Path
    config: RunConfig
    task: Task
    checkpoint: dict[str, Any] | None = None
    lock: RunLock | None = None
    created: Path | None = None
    fresh: bool = False

    def discard(self) -> None:
        """A new run refused before its first step: release it, and remove the folder it
        made (or empty the empty folder it was given)."""
        self.close()
        if self.created is not None:
            remove_folder(self.created)
        elif self.fresh:
            empty_folder(self.run_dir)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_new_run(new: NewRun) -> None:
    """Everything that can be checked before any data is read or any folder is made.

    Raises:
        UserError: a bad clipping spec, device or AMP mode, sizes that cannot fit in memory,
            or a missing ``--data``.
    """
    clipper_from_spec(new.train.clip, new.train.nonfinite)
    check_amp(new.train.amp, resolve_device(new.train.device))
    if new.options.name == "text" and new.options.data is None:
        raise UserError("--task text needs --data CSV (comment_text plus label columns)")
    if new.options.name == "lm" and new.model.bidirectional:
        raise UserError("--bidirectional would let the model see the character it predicts; "
                        "drop it for --task lm")
    check_model(new.options.name, new.model)
    check_fits_in_memory(new.task_options(), new.model)


def check_model(task_name: str, model: ModelConfig) -> None:
    """The transformer only for ``--task lm``, with heads that divide its width; ``heads``
    only for the transformer.

    Raises:
        UserError: naming the flag to change.
    """
    if model.cell != TRANSFORMER:
        if model.heads:
            raise UserError(f"--heads is read only by --model {TRANSFORMER}; remove it")
        return
    if task_name != "lm":
        raise UserError(f"--model {TRANSFORMER} is a character language model: use it with "
                        f"--task lm, not --task {task_name}")
    if model.heads < 1 or model.hidden_size % model.heads:
        raise UserError(f"--hidden-size {model.hidden_size} must be a multiple of --heads "
                        f"{model.heads} (each head reads an equal part of the width)")


def create_run(new: NewRun, parallel: Parallel | None = None) -> Run:
    """Check, create and lock the folder, build the task, write ``config.json`` (the writer).

    Returns:
        The open run on every rank (only the writer holds the lock).
    """
    parallel = parallel or Parallel.single(new.train.device)
    created: Run | None = None
    message: Any = None
    if parallel.is_writer:
        try:
            created = write_new_run(new, parallel)
            message = str(created.run_dir)
        except UserError as error:
            message = error
    message = parallel.broadcast(message)
    if isinstance(message, UserError):
        raise message
    if created is not None:
        return created
    run_dir = Path(message)  # the others follow the writer: same task from the same options
    return Run(run_dir, read_config(run_dir), make_task(new.task_options()))


def write_new_run(new: NewRun, parallel: Parallel) -> Run:
    """The writer's part of ``create_run``; a failure leaves no folder it created."""
    check_new_run(new)
    run_dir = new.folder()
    refuse_taken_folder(run_dir)
    created = make_folder(run_dir)
    lock, ours = None, False
    try:
        lock = RunLock(run_dir)
        refuse_taken_folder(run_dir, locked=True)  # another process may have filled it meanwhile
        ours = True
        task = make_task(new.task_options())
        config = new_config(new, task, parallel)
        task.save(run_dir)
        write_json(run_dir / CONFIG, config.to_dict())
    except BaseException:
        if lock is not None:
            lock.release()
        if created is not None:
            remove_folder(created)
        elif ours:
            empty_folder(run_dir)
        raise
    return Run(run_dir, config, task, lock=lock, created=created, fresh=True)


def refuse_taken_folder(run_dir: Path, locked: bool = False) -> None:
    """A run folder must be new or empty; say what to do with one that holds a run.

    Args:
        run_dir: the folder ``--out`` names.
        locked: this process holds the folder's lock already (so no other holder is named).
    """
    try:
        if not run_dir.exists():
            if run_dir.is_symlink():
                raise UserError(f"cannot create the folder {run_dir}: a dangling symbolic link "
                                "of that name exists")
            return
        if not run_dir.is_dir():
            raise UserError(f"--out {run_dir} is a file, not a folder; choose a new folder")
        if is_empty_folder(run_dir):
            return
    except OSError as error:  # a name too long, a folder that cannot be read
        raise os_error(run_dir, error, "create the folder") from None
    holder = None if locked else lock_holder(run_dir)
    if holder is not None:
        raise UserError(f"--out {run_dir} is held by {holder}, which is writing a run there; "
                        "wait for it to finish, or choose a new folder")
    if (run_dir / CONFIG).is_file() and not (run_dir / checkpoints.CHECKPOINT).exists():
        raise UserError(f"--out {run_dir} holds a run that stopped before its first "
                        f"checkpoint; start it over with --resume {run_dir}, or choose a new "
                        "folder")
    raise UserError(f"--out {run_dir} is not an empty folder; choose a new one, or "
                    f"continue the run there with --resume {run_dir}")


def new_config(new: NewRun, task: Task, parallel: Parallel) -> RunConfig:
    """The ``RunConfig`` of a new run, with ``total_steps`` fixed by the task."""
    distributed = (None if parallel.mode == "none"
                   else DistributedConfig(parallel.mode, parallel.world_size))
    return RunConfig(task=task.config(), model=new.model,
                     train=new.train.resolved(task.name, task.batches_per_epoch,
                                              task.default_steps),
                     distributed=distributed, gradclip_version=gradclip.__version__)


def read_config(run_dir: Path) -> RunConfig:
    """The run's ``config.json``, every value checked (``RunConfig.from_dict``).

    Raises:
        UserError: a missing folder or file, a file that is not a bounded regular JSON file,
            or a value out of its range, in one line.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} "
                        f"{'is a file, not a folder' if run_dir.exists() else 'does not exist'}")
    path = run_dir / CONFIG
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a gradclip run directory: {CONFIG} is missing") from None
    config = RunConfig.from_dict(data, str(path))
    try:  # what a flag combination must satisfy holds for the stored values too
        check_model(config.task["name"], config.model)
    except UserError as error:
        raise UserError(f"corrupt {path}: {error}") from None
    return config


def rebuild_task(config: RunConfig, run_dir: Path, training: bool = True) -> Task:
    """The task saved in ``config.json``; a hand-edited task section is a ``UserError``."""
    try:
        return load_task(config.task, run_dir, training=training)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"corrupt {Path(run_dir) / CONFIG}: its task section cannot be "
                        f"rebuilt ({type(error).__name__}: {error})") from None


def open_run(run_dir: Path, parallel: Parallel | None = None) -> Run:
    """An existing run to resume: locked by the writer, its task and checkpoint loaded.

    A run stopped before its first checkpoint starts over from its ``config.json`` (said in
    one line).
    """
    parallel = parallel or Parallel.single("cpu")
    config = read_config(run_dir)
    if parallel.is_writer:
        refuse_linked_entries(run_dir)
    lock = RunLock(run_dir) if parallel.is_writer else None
    try:
        checkpoint = None
        if (Path(run_dir) / checkpoints.CHECKPOINT).exists():
            checkpoint = checkpoints.load_checkpoint(run_dir)
        elif parallel.is_writer:
            print(f"{run_dir} has no checkpoint yet (it stopped before its first one): "
                  "starting the run over from its config.json", file=sys.stderr)
        task = rebuild_task(config, run_dir)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return Run(Path(run_dir), config, task, checkpoint, lock)


def open_for_scoring(run_dir: Path) -> tuple[RunConfig, Task, dict[str, Any]]:
    """A finished or running run, read only: configuration, task (no training data), weights."""
    config = read_config(run_dir)
    checkpoint = checkpoints.load_checkpoint(run_dir)
    return config, rebuild_task(config, run_dir, training=False), checkpoint
