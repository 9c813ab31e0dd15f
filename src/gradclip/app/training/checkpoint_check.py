"""What a checkpoint must hold before anything is loaded from it: structure, types, ranges, shapes.

``checkpoint.pt`` comes from a run folder, which may come from someone else or have been
edited by hand: it is untrusted input, as ``config.json`` is. Two checks run before any
``load_state_dict``:

- ``check_structure``, as the file is read (no model needed): plain values and dense CPU
  tensors only, anywhere (no meta, sparse or quantized tensor); the top-level keys and their
  types; ``step`` and ``next_batch_index`` integers >= 0; each RNG state tried on a throwaway
  generator of its kind.
- ``check_model``, ``check_optimizer``, ``check_scheduler``, ``check_counters`` and
  ``check_clipper``, once the trainer is built from ``config.json``: the model's keys, shapes
  and dtypes against the model the config builds; the optimizer's groups and the shapes of its
  per-parameter state; the scheduler's keys and types; the counters' keys, types and ranges;
  the clipper's state, tried on a fresh clipper of the run's spec.

A hand-edited ``lr``, ``momentum`` or ``weight_decay`` in ``config.json`` would be silently
overridden by the optimizer's and scheduler's saved state on resume, so it is refused, naming
both values. Every failure is one ``UserError`` line naming the field, e.g. ``corrupt
checkpoint runs/x/checkpoint.pt: counters.step must be an integer >= 0, got -5``.
"""

from __future__ import annotations

import math
import random
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from gradclip.app.bounds import shown_value
from gradclip.app.errors import UserError

MAX_DEPTH = 12  # the deepest a checkpoint written by gradclip nests is 5
STATUSES = ("running", "completed", "diverged", "interrupted")
# the per-parameter state each optimizer writes (others: any name)
OPTIMIZER_STATE = {"SGD": {"momentum_buffer"},
                   "Adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
                   "AdamW": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}}
NONE_ALLOWED = {"momentum_buffer"}  # SGD without momentum keeps None
# optimizer-group settings that config.json decides, with the train key that sets each
FROM_CONFIG = {"initial_lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}
RNG_KEYS = ("torch", "python", "cuda", "numpy")


def _dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"must be an object, got {_kind(value)}"


def _count(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be an integer >= 0, got {_kind(value)}"
    return None


def _optional_dict(value: Any) -> str | None:
    return None if value is None else _dict(value)


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {_kind(value)}"


def _finite(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return f"must be a finite number, got {_kind(value)}"
    return None


def _ranks(value: Any) -> str | None:
    if value is None or isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return None
    return f"must be a list of RNG states, got {_kind(value)}"


def _json_like(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_like(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_json_like(item) for item in value)
    return value is None or isinstance(value, str | int | float)  # bool is an int


def _config_copy(value: Any) -> str | None:
    if isinstance(value, dict) and _json_like(value):
        return None
    return f"must be an object of plain values (config.json's copy), got {_kind(value)}"


# the top-level keys: each with its check; REQUIRED of checkpoint.pt, BEST_REQUIRED of best.pt
TOP_LEVEL = {"model": _dict, "optimizer": _dict, "scheduler": _dict, "clipper": _dict,
             "scaler": _optional_dict, "step": _count, "next_batch_index": _count,
             "counters": _dict, "rng": _dict, "rng_per_rank": _ranks, "distributed": _dict,
             "sharded": _string, "metric": _string, "score": _finite, "config": _config_copy}
REQUIRED = ("model", "optimizer", "scheduler", "clipper", "step", "next_batch_index",
            "counters", "rng")
BEST_REQUIRED = ("model", "step", "metric", "score")


def refuse(path: Any, field: str, problem: str) -> UserError:
    """The one line: ``corrupt checkpoint <path>: <field> <problem>``."""
    return UserError(f"corrupt checkpoint {path}: {field} {problem}")


def _kind(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    return shown_value(value)


# ------------------------------------------------------------------ as the file is read
def check_structure(state: Any, path: Any, best: bool = False) -> None:
    """The checks that need no model: values, top-level keys and types, counts, RNG states.

    Args:
        state: what ``torch.load(..., weights_only=True)`` returned.
        path: the file, named in errors.
        best: ``best.pt`` of ``--keep-best`` (weights and score only).

    Raises:
        UserError: one line naming the first bad field.
    """
    if not isinstance(state, dict) or not {"model", "step"} <= state.keys():
        raise UserError(f"corrupt checkpoint {path}: not a gradclip checkpoint")
    check_values(state, "", path)
    missing = [key for key in (BEST_REQUIRED if best else REQUIRED) if key not in state]
    if missing:
        raise refuse(path, missing[0], "is missing")
    unknown = sorted(str(key) for key in state if key not in TOP_LEVEL)
    if unknown:
        raise refuse(path, "the key", f"{unknown[0][:40]!r} is not one a checkpoint holds")
    for key, value in state.items():
        problem = TOP_LEVEL[key](value)
        if problem:
            raise refuse(path, key, problem)
    for field, rng in [("rng", state.get("rng")), *(
            (f"rng_per_rank.{rank}", item) for rank, item in enumerate(
                state.get("rng_per_rank") or []))]:
        if rng is not None:
            check_rng(rng, field, path)


def check_values(value: Any, field: str, path: Any, depth: int = 0) -> None:
    """Plain values and dense CPU tensors only, nested at most ``MAX_DEPTH`` deep.

    Raises:
        UserError: a meta, sparse or quantized tensor, another object, or deep nesting.
    """
    if depth > MAX_DEPTH:
        raise refuse(path, field, "is nested too deeply")
    if isinstance(value, Tensor):
        problem = _tensor_problem(value)
        if problem:
            raise refuse(path, field, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise refuse(path, field or "the checkpoint", f"has a key of type "
                             f"{type(key).__name__}")
            check_values(item, f"{field}.{key}" if field else str(key), path, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_values(item, f"{field}.{index}", path, depth + 1)
    elif not (value is None or isinstance(value, bool | int | float | str)
              or _is_old_numpy_state(value, field)):
        raise refuse(path, field, f"holds a {type(value).__name__}, not a plain value")


def _tensor_problem(tensor: Tensor) -> str | None:
    if tensor.is_meta:
        return "is a meta tensor (no data)"
    if tensor.layout != torch.strided:
        return f"is a {str(tensor.layout).removeprefix('torch.')} tensor, not a dense one"
    if tensor.is_quantized:
        return "is a quantized tensor"
    if tensor.device.type != "cpu":
        return f"is on {tensor.device}, not loaded to the CPU"
    return None


def _is_old_numpy_state(value: Any, field: str) -> bool:
    """gradclip 0.1.0 saved NumPy's RNG keys as an ``uint32`` array (``rng.numpy.1``)."""
    return (field.startswith("rng") and type(value).__name__ == "ndarray"
            and str(getattr(value, "dtype", "")) == "uint32")


def check_rng(rng: Any, field: str, path: Any) -> None:
    """Each RNG state tried on a throwaway generator of its kind (CUDA's: its type only).

    Raises:
        UserError: a missing torch or Python state, an unknown key, or a state its generator
            refuses.
    """
    if not isinstance(rng, dict):
        raise refuse(path, field, f"must be an object, got {_kind(rng)}")
    unknown = [str(key) for key in rng if key not in RNG_KEYS]
    if unknown:
        raise refuse(path, f"{field}.{unknown[0][:40]}", "is not an RNG gradclip saves")
    for key in ("torch", "python"):
        if key not in rng:
            raise refuse(path, f"{field}.{key}", "is missing")
    probes = {"torch": _probe_torch, "python": _probe_python, "cuda": _probe_cuda,
              "numpy": _probe_numpy}
    for key, state in rng.items():
        try:
            probes[key](state)
        except Exception:  # noqa: BLE001 - whatever the generator's setter refuses
            raise refuse(path, f"{field}.{key}", f"is not a {key} RNG state "
                         f"({_kind(state)})") from None


def _probe_torch(state: Any) -> None:
    if not isinstance(state, Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        raise TypeError("a 1-D uint8 tensor")
    torch.Generator().set_state(state)


def _probe_python(state: Any) -> None:
    random.Random().setstate(state)


def _probe_cuda(states: Any) -> None:
    if not isinstance(states, list | tuple) or not all(
            isinstance(item, Tensor) and item.dtype == torch.uint8 and item.dim() == 1
            for item in states):
        raise TypeError("a list of 1-D uint8 tensors")


def _probe_numpy(state: Any) -> None:
    import numpy

    numpy.random.RandomState().set_state(numpy_state_tuple(state))


def numpy_state_tuple(saved: Any) -> tuple:
    """NumPy's ``get_state()`` tuple from what a checkpoint holds (a dict, or 0.1.0's tuple)."""
    import numpy

    if isinstance(saved, dict):
        keys = saved["state"]
        if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64:
            raise TypeError("numpy.state must be an int64 tensor")
        return (saved["key"], keys.numpy().astype(numpy.uint32), saved["pos"],
                saved["has_gauss"], saved["cached_gaussian"])
    return tuple(saved)


# ------------------------------------------------------------------ against the built run
def check_model(saved: dict[str, Any], model: nn.Module, path: Any) -> None:
    """The saved weights have exactly the names, shapes and dtypes of ``model``'s.

    Raises:
        UserError: a missing or unexpected name, or another shape or dtype (a checkpoint of
            another ``--hidden-size``, ``--layers`` or ``--model``).
    """
    expected = model.state_dict()
    missing = [name for name in expected if name not in saved]
    if missing:
        raise refuse(path, f"model.{missing[0]}", "is missing: the checkpoint is not of the "
                     "model config.json builds (another --model or --layers?)")
    for name, tensor in saved.items():
        if name not in expected:
            raise refuse(path, f"model.{str(name)[:60]}", "is not a weight of the model "
                         "config.json builds (another --model or --layers?)")
        want = expected[name]
        if not isinstance(tensor, Tensor):
            raise refuse(path, f"model.{name}", f"must be a tensor, got {_kind(tensor)}")
        if tuple(tensor.shape) != tuple(want.shape) or tensor.dtype != want.dtype:
            raise refuse(path, f"model.{name}", f"is {_kind(tensor)}; the model config.json "
                         f"builds has {_kind(want)} (another --hidden-size?)")


def check_optimizer(saved: dict[str, Any], optimizer: torch.optim.Optimizer, path: Any,
                    config_path: Any = "config.json") -> None:
    """The groups, their settings and the per-parameter state fit ``optimizer`` (fresh).

    Raises:
        UserError: another number of groups or parameters, an unknown setting or state, a
            state tensor of another shape, or a setting ``config.json`` decides (``lr``,
            ``momentum``, ``weight_decay``) that differs from the saved one.
    """
    expected = optimizer.state_dict()
    if set(saved) != {"state", "param_groups"}:
        raise refuse(path, "optimizer", "must hold exactly state and param_groups")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(expected["param_groups"]):
        raise refuse(path, "optimizer.param_groups", f"must be a list of "
                     f"{len(expected['param_groups'])} group(s), got {_kind(groups)}")
    kind = type(optimizer).__name__
    for index, (group, want) in enumerate(zip(groups, expected["param_groups"], strict=True)):
        _check_group(group, want, f"optimizer.param_groups.{index}", kind, path, config_path)
    shapes = {number: parameter.shape for number, parameter in zip(
        [n for group in expected["param_groups"] for n in group["params"]],
        [p for group in optimizer.param_groups for p in group["params"]], strict=True)}
    state = saved["state"]
    if not isinstance(state, dict):
        raise refuse(path, "optimizer.state", f"must be an object, got {_kind(state)}")
    for number, entry in state.items():
        _check_parameter_state(entry, shapes.get(number), f"optimizer.state.{number}",
                               OPTIMIZER_STATE.get(kind), path)


def _check_group(group: Any, want: dict[str, Any], field: str, kind: str, path: Any,
                 config_path: Any) -> None:
    if not isinstance(group, dict):
        raise refuse(path, field, f"must be an object, got {_kind(group)}")
    params = group.get("params")
    if not (isinstance(params, list) and all(type(number) is int for number in params)
            and params == want["params"]):
        raise refuse(path, f"{field}.params", f"must number the {len(want['params'])} "
                     "parameters of the model config.json builds")
    for key, value in group.items():
        if key == "params":
            continue
        if key not in want:
            raise refuse(path, f"{field}.{str(key)[:40]}", f"is not a setting of {kind} "
                         "(a checkpoint of another --optimizer?)")
        problem = conformity(value, want[key])
        if problem:
            raise refuse(path, f"{field}.{key}", problem)
        if key in FROM_CONFIG and value != want[key]:
            raise UserError(
                f"{config_path} gives train.{FROM_CONFIG[key]} {want[key]:g} ({field}.{key}), "
                f"but {path} was trained with {value:g}: --resume continues a run with its "
                "saved settings; put the value back, or start a new run with --out")


def _check_parameter_state(entry: Any, shape: torch.Size | None, field: str,
                           names: set[str] | None, path: Any) -> None:
    if shape is None:
        raise refuse(path, field, "is the state of a parameter the model does not have")
    if not isinstance(entry, dict):
        raise refuse(path, field, f"must be an object, got {_kind(entry)}")
    for name, value in entry.items():
        if names is not None and name not in names:
            raise refuse(path, f"{field}.{str(name)[:40]}", "is not a state this optimizer "
                         "keeps (a checkpoint of another --optimizer?)")
        if isinstance(value, Tensor):
            if value.dim() != 0 and value.shape != shape:
                raise refuse(path, f"{field}.{name}", f"is {_kind(value)}; its parameter has "
                             f"shape {tuple(shape)}")
            if not value.dtype.is_floating_point:
                raise refuse(path, f"{field}.{name}", f"must be floating point, got {value.dtype}")
        elif (value is None and name not in NONE_ALLOWED) or (value is not None
                                                              and _finite(value)):
            raise refuse(path, f"{field}.{name}", f"must be a tensor, got {_kind(value)}")


# config.json's parts that may differ from the checkpoint's copy: the version that wrote it
# (a newer gradclip resumes an older run), the launch (``distributed``: the ranks of this
# torchrun, checked against the checkpoint by the parallel setup), where the data file now
# lies (its sha256 proves it is the same file) and what belongs to the machine or to the
# bookkeeping, not to the run (a folder moved to a machine with fewer cores or no GPU)
CONFIG_FREE = ("gradclip_version", "distributed", "task.data", "task.path", "train.threads",
               "train.device", "train.log_every", "train.checkpoint_every")


def check_config(saved: Any, current: dict[str, Any], path: Any, config_path: Any) -> None:
    """``config.json`` still says what the run was trained with: the checkpoint keeps a copy
    (``config``; checkpoints of 0.2.0 and before have none, and are not checked here).

    A hand edit that resume would apply mid-run (``total_steps``, ``schedule``, ``seq_len``,
    ``batch_size``, ``dropout``, a seed) or ignore is refused, naming the first changed value.
    Keys the copy lacks (settings added by a later version) are not compared.

    Raises:
        UserError: a value of ``config.json`` that differs from the checkpoint's copy.
    """
    if saved is None:
        return
    for field, then, now in differences(saved, current):
        if field in CONFIG_FREE or field.split(".")[0] in CONFIG_FREE:
            continue
        raise UserError(f"{config_path} gives {field} {_quoted(now)}, but {path} was trained "
                        f"with {_quoted(then)}: --resume continues a run with its saved "
                        "settings; put the value back, or start a new run with --out")


def _quoted(value: Any) -> str:
    """A config value as the message quotes it: a short string in quotes, as the file has it."""
    return repr(value) if isinstance(value, str) and len(value) < 40 else shown_value(value)


def differences(saved: Any, current: Any, field: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for each value that differs, where the
    saved copy has the key."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [change for key, value in saved.items() if key in current
                for change in differences(value, current[key], f"{field}.{key}".lstrip("."))]
    if isinstance(saved, list | tuple) and isinstance(current, list | tuple):
        saved, current = list(saved), list(current)
    return [] if saved == current else [(field, saved, current)]


def check_scheduler(saved: dict[str, Any], scheduler: Any, path: Any,
                    config_path: Any = "config.json") -> None:
    """The saved scheduler state has the keys and kinds of ``scheduler``'s own (fresh).

    Raises:
        UserError: an unknown key, a value of another kind, or a ``base_lrs`` that is not the
            learning rate ``config.json`` gives.
    """
    expected = scheduler.state_dict()
    for key, value in saved.items():
        if key not in expected:
            raise refuse(path, f"scheduler.{str(key)[:40]}", "is not a setting of the "
                         "learning-rate schedule")
        problem = conformity(value, expected[key])
        if problem:
            raise refuse(path, f"scheduler.{key}", problem)
    if saved.get("base_lrs", expected["base_lrs"]) != expected["base_lrs"]:
        raise UserError(f"{config_path} gives the learning rate(s) {expected['base_lrs']} "
                        f"(train.lr), but {path} was trained with {saved['base_lrs']}: "
                        "--resume continues a run with its saved settings; put the value "
                        "back, or start a new run with --out")


def conformity(value: Any, want: Any) -> str | None:
    """What keeps ``value`` from being of ``want``'s kind (recursively), or ``None``.

    Numbers must be finite (an ``int`` where ``want`` is one must be >= 0), sequences of the
    same length, objects without keys ``want`` lacks, tensors of ``want``'s shape and dtype.
    """
    if want is None or isinstance(want, bool | str):
        return None if type(value) is type(want) else f"must be {_kind(want)}, got {_kind(value)}"
    if isinstance(want, int):
        return _count(value)
    if isinstance(want, float):
        return _finite(value)
    if isinstance(want, list | tuple):
        if not isinstance(value, list | tuple) or len(value) != len(want):
            return f"must be a list of {len(want)}, got {_kind(value)}"
        return next((f"item {index} {problem}" for index, (item, wanted) in enumerate(
            zip(value, want, strict=True)) if (problem := conformity(item, wanted))), None)
    if isinstance(want, dict):
        if not isinstance(value, dict):
            return f"must be an object, got {_kind(value)}"
        return next((f"{key}: " + (problem or "") for key, item in value.items()
                     if (problem := "is unknown" if key not in want
                         else conformity(item, want[key]))), None)
    if isinstance(want, Tensor) and not (isinstance(value, Tensor) and value.shape == want.shape
                                         and value.dtype == want.dtype):
        return f"must be {_kind(want)}, got {_kind(value)}"
    return None


def check_counters(saved: dict[str, Any], counters_type: type, state: dict[str, Any],
                   total_steps: int, path: Any) -> None:
    """The running totals: known keys, their types and ranges, agreeing with ``step``.

    Raises:
        UserError: an unknown key, a negative count, an unknown status, a ``counters.step``
            other than ``step``, or a step past ``train.total_steps``.
    """
    kinds = {item.name: str(item.type) for item in fields(counters_type)}
    for key, value in saved.items():
        if key not in kinds:
            raise refuse(path, f"counters.{str(key)[:40]}", "is not a counter gradclip keeps")
        problem = _counter_problem(kinds[key], key, value)
        if problem:
            raise refuse(path, f"counters.{key}", problem)
    for key in ("step", "next_batch_index"):
        if saved.get(key, state[key]) != state[key]:
            raise refuse(path, f"counters.{key}", f"is {saved[key]}, but {key} is {state[key]}")
    if state["step"] > total_steps:
        raise refuse(path, "step", f"{state['step']} is past train.total_steps "
                     f"({total_steps}) of config.json")


FINITE_COUNTERS = ("seconds", "max_grad_norm")  # the largest finite norm seen: never NaN


def _counter_problem(kind: str, key: str, value: Any) -> str | None:
    if kind.startswith("int"):
        return None if value is None and "None" in kind else _count(value)
    if kind.startswith("float"):
        if value is None and "None" in kind:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {_kind(value)}"
        if key in FINITE_COUNTERS and not (math.isfinite(value) and value >= 0):
            return f"must be a finite number >= 0, got {_kind(value)}"
        if key == "best_score" and not math.isfinite(value):
            return f"must be a finite number, got {_kind(value)}"
        return None
    if value not in STATUSES:
        return f"must be one of {', '.join(STATUSES)}, got {_kind(value)}"
    return None


def check_clipper(saved: dict[str, Any], spec: str, nonfinite: str, path: Any) -> None:
    """The clipper's state, loaded into a fresh clipper of the run's spec (a throwaway).

    Raises:
        UserError: the clipper refuses the state (its own ``ValueError``, in one line).
    """
    from gradclip.app.training.setup import clipper_from_spec

    try:
        clipper_from_spec(spec, nonfinite).load_state_dict(saved)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise refuse(path, "clipper", f"does not fit --clip {spec}: {message}") from None
