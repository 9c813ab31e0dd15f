"""Checkpoints: written atomically, read safely, with the RNG states a resumed run needs.

``checkpoint.pt`` is a dict of tensors and plain Python values (``dict``, ``list``, ``tuple``,
``str``, ``int``, ``float``, ``bool``, ``None``), nothing else, so it loads with
``torch.load(..., weights_only=True)`` and a run folder from someone else never executes
code. It holds at least:

- ``model`` (the model's ``state_dict``; consolidated weights also for FSDP runs),
  ``optimizer``, ``scheduler``, ``clipper`` (the strategy's state), ``scaler`` (fp16 AMP,
  else ``None``);
- ``step`` (optimizer steps done), ``next_batch_index`` (the data position: the next
  micro-batch to draw) and ``counters`` (the run's running totals);
- ``rng``: torch (CPU and CUDA) as byte tensors, Python's ``random`` as its state tuple, and
  NumPy's as ``{"key", "state" (an int64 tensor), "pos", "has_gauss", "cached_gaussian"}``;
- multi-process runs add ``rng_per_rank`` and ``distributed`` (``mode``, ``world_size``); FSDP
  runs add ``sharded``, the name of the ``sharded-<step>`` DCP folder beside it.

Tensors whose rows are mostly zero (the text model's wide path and its AdamW moments) are
stored as their non-zero rows (``gradclip.app.training.compact``) and read back bit for bit.
The checkpoint of a finished run (completed or diverged) keeps the optimizer's settings but
not its per-parameter state (``without_moments``): no step is left to resume, and the
moments would be most of the file.

Checkpoints written by gradclip 0.1.0 pickled NumPy's state as an array: reading them allows
exactly NumPy's array reconstruction and its ``uint32`` dtype, nothing more.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from gradclip.app.errors import UserError
from gradclip.app.training.checkpoint_check import check_structure, numpy_state_tuple
from gradclip.app.training.compact import compact, expand
from gradclip.app.training.rundir import create_temporary
from gradclip.app.untrusted import regular_file_problem

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any], name: str = CHECKPOINT) -> None:
    """Write ``state`` to ``run_dir/checkpoint.pt`` (or ``name``: ``best.pt`` of
    ``--keep-best``) so that a crash never leaves a torn file.

    Rule: write a temporary file of this process's own in the same directory, flush it to
    disk, then ``os.replace`` it over the old checkpoint (an atomic rename on POSIX and
    Windows). The old checkpoint survives any failure, a full disk included.

    Raises:
        UserError: the file could not be written (the path and the reason in one line).
    """
    path = Path(run_dir) / name
    temporary, handle = create_temporary(path)
    try:
        with handle:
            torch.save(compact(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise UserError(f"cannot write {path}: {write_failure(error)} (the previous "
                        "checkpoint, if any, is intact)") from None


def write_failure(error: OSError | RuntimeError) -> str:
    """The system's reason for a failed write, in our words (torch's own text names C++
    files and line numbers: ``[enforce fail at inline_container.cc:...]``)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return "the file system refused the write (is the disk full?)"


def archive_damage(path: Path) -> str | None:
    """What is wrong with the bytes of the archive ``torch.save`` wrote, or ``None``.

    ``torch.save`` writes a zip archive, whose every entry carries the CRC-32 of its bytes:
    a byte changed after the write (a flipped bit in a weight, in the pickled RNG state) fails
    that check, though ``torch.load`` itself never looks at it and would load the damage.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entry = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError,
            zlib.error):
        return "not a torch archive (torch.save writes a zip archive)"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if entry is None:
        return None
    return f"{entry} fails its CRC-32 check (the bytes changed after they were written)"


def load_checkpoint(run_dir: Path, name: str = CHECKPOINT) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.pt`` (or ``name``) with ``weights_only=True``: tensors and
    plain types only, then check its structure (``checkpoint_check.check_structure``).

    Raises:
        UserError: the file is missing, not a regular file, torn, not a gradclip checkpoint,
            holds objects other than tensors and plain types (refused without running
            anything), or a field of the wrong type or range (named).
    """
    path = Path(run_dir) / name
    try:
        problem = regular_file_problem(path)
    except FileNotFoundError:
        raise UserError(f"no checkpoint in {run_dir}: {name} is missing") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    if problem:
        raise UserError(f"cannot read {path}: {problem}")
    damage = archive_damage(path)
    if damage:
        raise UserError(f"corrupt checkpoint {path}: {damage}")
    try:
        with _numpy_state_of_0_1_0():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():  # an object that is no tensor
            raise UserError(f"{path} is not a gradclip checkpoint (refusing to load arbitrary "
                            "objects)") from None
        raise UserError(f"corrupt checkpoint {path}: UnpicklingError; it cannot be "
                        "read") from None
    except Exception as error:  # noqa: BLE001 - torn or mutated bytes fail in many ways
        # (RuntimeError, EOFError, KeyError, IndexError, struct.error, UnicodeDecodeError,
        # RecursionError, ...); weights_only guarantees that none of them ran any code
        raise UserError(f"corrupt checkpoint {path}: {type(error).__name__}; "
                        "it cannot be read") from None
    if not isinstance(state, dict) or not {"model", "step"} <= state.keys():
        raise UserError(f"corrupt checkpoint {path}: not a gradclip checkpoint")
    try:
        state = expand(state)
    except (ValueError, RuntimeError, RecursionError) as error:
        raise UserError(f"corrupt checkpoint {path}: {error}") from None
    check_structure(state, path, best=name != CHECKPOINT)
    return state


def without_moments(optimizer_state: Any) -> Any:
    """An optimizer ``state_dict`` without its per-parameter state (moments, step counts);
    its ``param_groups`` (the settings) stay. Anything else is returned as it is."""
    if isinstance(optimizer_state, dict) and "state" in optimizer_state:
        return {**optimizer_state, "state": {}}
    return optimizer_state


def _numpy_state_of_0_1_0() -> contextlib.AbstractContextManager:
    """Allow exactly what 0.1.0's pickled NumPy RNG state needs (an ``uint32`` array)."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        try:
            import numpy
        except ImportError:
            return contextlib.nullcontext()
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        # the same function under NumPy 1.x's module name
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return torch.serialization.safe_globals(
        [_reconstruct, numpy.ndarray, numpy.dtype, type(numpy.dtype(numpy.uint32))])


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU, CUDA), ``random``, NumPy."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        key, keys, pos, has_gauss, cached_gaussian = numpy.random.get_state()
        states["numpy"] = {"key": str(key), "state": torch.from_numpy(keys.astype("int64")),
                           "pos": int(pos), "has_gauss": int(has_gauss),
                           "cached_gaussian": float(cached_gaussian)}
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what ``rng_states`` captured (or what gradclip 0.1.0 saved)."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(numpy_state_tuple(states["numpy"]))
