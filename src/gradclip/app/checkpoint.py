"""Checkpoints written atomically, and the RNG states a resumed run needs to be exact.

``checkpoint.pt`` is a dict with at least ``model`` (the model's ``state_dict``),
``optimizer``, ``scheduler``, ``clipper``, ``scaler`` (AMP, else ``None``), ``step`` (optimizer
steps done), ``next_batch_index`` (the data position: the next micro-batch to draw),
``rng`` (torch, CUDA, Python ``random``, NumPy) and ``counters`` (the run's running totals).
"""

from __future__ import annotations

import os
import pickle
import random
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from gradclip.app.errors import UserError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``run_dir/checkpoint.pt`` so that a crash never leaves a torn file.

    Rule: write a temporary file in the same directory, flush it to disk, then ``os.replace``
    it over the old checkpoint (an atomic rename on POSIX and Windows).
    """
    path = Path(run_dir) / CHECKPOINT
    temporary = path.with_suffix(".pt.tmp")
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.pt``; a missing or unreadable checkpoint is a ``UserError``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"no checkpoint in {run_dir}: {CHECKPOINT} is missing (was the run "
                        "killed before its first checkpoint? start it again without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as error:
        raise UserError(f"corrupt checkpoint {path}: {type(error).__name__}; "
                        "it cannot be resumed") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= state.keys():
        raise UserError(f"corrupt checkpoint {path}: not a gradclip checkpoint")
    return state


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU, CUDA), ``random``, NumPy."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what ``rng_states`` captured."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
