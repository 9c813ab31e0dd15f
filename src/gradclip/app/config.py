"""The typed configuration of a run, built once from the command line and read everywhere.

``config.json`` in a run folder is the serialisation of a ``RunConfig``::

    {"gradclip_version": "0.1.0",
     "task": {...the task's own settings, "name" first...},
     "model": {"cell": "rnn", "hidden_size": 64, ...},          # ModelConfig
     "train": {"clip": "norm:1.0", "lr": 0.05, ...},            # TrainConfig
     "distributed": {"mode": "ddp", "world_size": 2}}           # only for DDP/FSDP runs

A new run starts from a ``TaskOptions`` (what the task is built from) plus the model
and training settings; the task then fixes what depends on its data (``total_steps`` from
``--epochs``). Reading a hand-edited or foreign ``config.json`` checks every field's type and
turns a mistake into one ``UserError`` line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gradclip.app.bounds import check, shown_value
from gradclip.app.choices import (
    AMP_MODES,
    MODEL_NAMES,
    NONFINITE_POLICIES,
    OPTIMIZERS,
    PARALLEL_MODES,
    SCHEDULES,
)
from gradclip.app.errors import UserError

DEFAULT_STEPS = 2000
DEFAULT_EPOCHS = 3

# The defaults of the flags whose value depends on the task (model, optimization, threads):
# what a run gets when neither the user nor the task says otherwise. The synthetic tasks
# (adding, temporal-order, lm) use exactly these. ``None``: the task decides (``--seq-len``),
# or the flag means nothing for the recurrent models (``--heads``).
FLAG_DEFAULTS: dict[str, Any] = {
    "model": "rnn", "hidden_size": 64, "layers": 1, "bidirectional": False, "dropout": 0.0,
    "embed_dim": 128, "clip": "norm:1.0", "optimizer": "sgd", "lr": 0.05,
    "weight_decay": 0.0, "schedule": "constant", "epochs": None, "threads": 1,
    "heads": None, "seq_len": None, "batch_size": 64, "warmup_steps": 0, "min_lr_ratio": 0.0,
}

# Each task's recommended settings, used for every flag the user did not give (``gradclip
# train --help`` lists them, ``config.json`` records the resolved values). Kept here, not in
# the task modules, so that the command line can show them without importing torch.
RECOMMENDED: dict[str, dict[str, Any]] = {
    # measured by benchmarks/text.py (docs: the text classification page)
    "text": {"model": "gru", "hidden_size": 128, "bidirectional": True, "dropout": 0.3,
             "embed_dim": 128, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01,
             "schedule": "cosine", "epochs": 6, "clip": "norm:1.0", "threads": 2},
}

# The settings a (task, model) pair recommends on top of the task's own, for the flags the
# user did not give. The transformer: nanoGPT's CPU character configuration (4 layers of width
# 128 with 4 heads, windows of 64 characters, batches of 12, AdamW at 1e-3 with 100 warm-up
# steps and cosine decay to 1e-4, weight decay 0.1, gradient norm clipped at 1.0), on one
# thread (its matrices are small: a second thread gains little, and on a loaded machine loses).
MODEL_RECOMMENDED: dict[tuple[str, str], dict[str, Any]] = {
    ("lm", "transformer"): {
        "hidden_size": 128, "layers": 4, "heads": 4, "dropout": 0.0, "seq_len": 64,
        "batch_size": 12, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1,
        "schedule": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1, "clip": "norm:1.0"},
}


def recommended_settings(task: str, model: str | None) -> dict[str, Any]:
    """The settings ``task`` recommends with ``model`` (``None``: the task's own model)."""
    settings = dict(RECOMMENDED.get(task, {}))
    model = model or settings.get("model", FLAG_DEFAULTS["model"])
    settings.update(MODEL_RECOMMENDED.get((task, model), {}))
    return settings


@dataclass(frozen=True)
class TaskOptions:
    """What a new task is built from (``Task.from_options``); unused fields stay ``None``."""

    name: str
    seed: int
    batch_size: int
    seq_len: int | None = None
    data: Path | None = None
    vocab_size: int | None = None
    max_len: int | None = None
    labels: list[str] | None = None
    val_fraction: float | None = None
    text_file: Path | None = None
    text_column: str | None = None
    delimiter: str | None = None
    model: str | None = None  # the model fed (lm: the transformer reads independent windows)


@dataclass(frozen=True)
class ModelConfig:
    """The model: ``gradclip.app.models.build_model(task, **asdict(model))``.

    ``cell`` names a recurrent cell (``rnn``, ``rnn-relu``, ``lstm``, ``gru``) or
    ``transformer`` (``--task lm`` only: ``hidden_size`` is its width, ``heads`` its attention
    heads, ``embed_dim`` and ``bidirectional`` unused); ``heads`` is 0 for recurrent models.
    """

    cell: str = "rnn"
    hidden_size: int = 64
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    embed_dim: int = 128
    heads: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, clipping and bookkeeping of a run.

    ``total_steps`` is ``None`` in a request until ``resolved`` fixes it from the task
    (``--steps``, or ``--epochs`` over the task's batches per epoch).
    """

    clip: str = "norm:1.0"
    nonfinite: str = "propagate"
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    total_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    accumulate: int = 1
    amp: str = "none"
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    log_every: int = 50
    eval_every: int = 0
    checkpoint_every: int = 200
    keep_best: bool = False

    def resolved(self, task_name: str, batches_per_epoch: int | None,
                 default_steps: int | None = None) -> TrainConfig:
        """This config with ``total_steps`` fixed: ``--steps``, or ``--epochs`` in steps, or
        the task's ``default_steps`` when neither is given (else 3 epochs, or 2000 steps).

        Raises:
            UserError: both ``--steps`` and ``--epochs``, or ``--epochs`` on an endless task.
        """
        if self.total_steps is not None and self.epochs is not None:
            raise UserError("give --steps or --epochs, not both")
        if self.total_steps is not None:
            return self
        if self.epochs is None and default_steps is not None:
            return dataclasses.replace(self, total_steps=default_steps)
        if batches_per_epoch is None:
            if self.epochs is not None:
                raise UserError(f"--epochs needs a task with a finite data set; the {task_name} "
                                "task is generated on the fly: use --steps")
            return dataclasses.replace(self, total_steps=DEFAULT_STEPS)
        epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
        steps = max(1, math.ceil(epochs * batches_per_epoch / self.accumulate))
        return dataclasses.replace(self, total_steps=steps)


@dataclass(frozen=True)
class DistributedConfig:
    """How a multi-process run was launched: ``ddp`` or ``fsdp`` over ``world_size`` ranks."""

    mode: str
    world_size: int


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run; ``config.json`` is its ``to_dict``."""

    task: dict[str, Any]
    model: ModelConfig
    train: TrainConfig
    distributed: DistributedConfig | None = None
    gradclip_version: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``config.json`` (the key order of earlier versions)."""
        data: dict[str, Any] = {"gradclip_version": self.gradclip_version, "task": self.task,
                                "model": dataclasses.asdict(self.model),
                                "train": dataclasses.asdict(self.train)}
        if self.distributed is not None:
            data["distributed"] = dataclasses.asdict(self.distributed)
        for section, added in _ADDED_LATER.items():  # at their old meaning: as older runs
            for key, old in added.items():
                if data[section].get(key, old) == old:
                    data[section].pop(key, None)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "config.json") -> RunConfig:
        """Parse ``config.json``, checking every field (``source`` names the file in errors).

        Raises:
            UserError: a missing section, an unknown or missing key, or a value of the wrong
                type, named in one line.
        """
        if not isinstance(data, dict) or not {"task", "model", "train"} <= data.keys():
            raise UserError(f"corrupt {source}: expected the keys task, model and train")
        task = check_task_settings(data["task"], source)
        distributed = data.get("distributed")
        return cls(
            task=task,
            model=_section(ModelConfig, data["model"], "model", source),
            train=_section(TrainConfig, data["train"], "train", source),
            distributed=None if distributed is None else _section(
                DistributedConfig, distributed, "distributed", source),
            gradclip_version=str(data.get("gradclip_version", "")),
        )


# The JSON types each annotation admits (an int is a valid float; bool is not an int here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "int | None": (int, type(None)), "float | None": (int, float, type(None)),
}


# Keys added after 0.1.0, with the value that means what older runs did (they lack the key).
_ADDED_LATER: dict[str, dict[str, Any]] = {
    "train": {"keep_best": False, "warmup_steps": 0, "min_lr_ratio": 0.0},
    "model": {"heads": 0},
}

# Fixed once a run is stored (``null`` only in a request).
_STORED_AS_NUMBER = {"total_steps"}

# The enumerated settings: the values the flags offer (``gradclip.app.choices``).
CHOICES: dict[str, tuple[str, ...]] = {
    "cell": MODEL_NAMES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "amp": AMP_MODES,
    "nonfinite": NONFINITE_POLICIES, "mode": PARALLEL_MODES[1:]}


def _section(kind: type, value: Any, name: str, source: str) -> Any:
    """One dataclass from a JSON object, every field present, of its type and in its range."""
    if not isinstance(value, dict):
        raise UserError(f"corrupt {source}: {name} must be an object, got {shown_value(value)}")
    expected = {item.name: item for item in fields(kind)}
    unknown = sorted(set(value) - set(expected))
    if unknown:
        raise UserError(f"corrupt {source}: unknown key {name}.{unknown[0][:40]}")
    for key, item in expected.items():
        if key not in value and key in _ADDED_LATER.get(name, {}):
            value = {**value, key: _ADDED_LATER[name][key]}  # a run from before the key
        if key not in value:
            raise UserError(f"corrupt {source}: {name}.{key} is missing")
        allowed = _JSON_TYPES[str(item.type)]
        given = value[key]
        if (isinstance(given, bool) and bool not in allowed) or not isinstance(given, allowed):
            raise UserError(f"corrupt {source}: {name}.{key} must be {_type_words(item.type)}, "
                            f"got {shown_value(given)}")
        problem = _value_problem(key, given)
        if problem:
            raise UserError(f"corrupt {source}: {name}.{key} {problem}")
    return kind(**value)


def _value_problem(key: str, value: Any) -> str | None:
    """What is wrong with a stored ``value`` of ``key`` (its bound, its choices), or ``None``."""
    if value is None:
        return "must be set" if key in _STORED_AS_NUMBER else None
    if key in CHOICES and value not in CHOICES[key]:
        return f"must be one of {', '.join(CHOICES[key])}, got {shown_value(value)}"
    return check(key, value)


def check_task_settings(task: Any, source: str = "config.json") -> dict[str, Any]:
    """The ``task`` section: an object with a known ``name``, each bounded setting in range.

    What a task alone knows (its labels, the length of ``pos_weight``) its ``from_config``
    checks.

    Raises:
        UserError: one line naming ``task.<key>``.
    """
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        raise UserError(f"corrupt {source}: task must be an object with a name")
    for key, value in task.items():
        problem = check(key, value)
        if problem:
            raise UserError(f"corrupt {source}: task.{key} {problem}")
    return task


def _type_words(annotation: Any) -> str:
    words = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
             "int | None": "an integer or null", "float | None": "a number or null"}
    return words[str(annotation)]
