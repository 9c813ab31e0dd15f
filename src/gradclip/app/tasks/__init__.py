"""Task registry: ``make_task(options)`` for new runs, ``load_task(config, run_dir)`` to rebuild.

Each task lives in its own module and is imported only when chosen (the text task needs the
optional ``tokenizers`` dependency).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError

if TYPE_CHECKING:
    from gradclip.app.tasks.base import Batch, Task

# registry name -> (module, class name)
TASKS: dict[str, tuple[str, str]] = {
    "adding": ("gradclip.app.tasks.adding", "AddingTask"),
    "temporal-order": ("gradclip.app.tasks.temporal_order", "TemporalOrderTask"),
    "text": ("gradclip.app.tasks.text.task", "TextTask"),
    "lm": ("gradclip.app.tasks.lm.task", "LanguageModelTask"),
}

__all__ = ["TASKS", "Batch", "Task", "load_task", "make_task", "task_class"]


def __getattr__(name: str) -> Any:
    """``Batch`` and ``Task`` on first use: they import torch, and the command line reads
    ``TASKS`` (for ``--task``'s choices) before it imports torch."""
    if name in ("Batch", "Task"):
        from gradclip.app.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def task_class(name: str) -> type[Task]:
    """The class registered under ``name``; an unknown name is a ``UserError``."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module_name, class_name = TASKS[name]
    return getattr(importlib.import_module(module_name), class_name)


def make_task(options: TaskOptions) -> Task:
    """A new task from the options of ``gradclip train`` (``options.name`` picks it)."""
    return task_class(options.name).from_options(options)


def load_task(config: dict[str, Any], run_dir: Path, training: bool = True) -> Task:
    """Rebuild the task saved in a run directory's ``config.json`` (``config["task"]``)."""
    return task_class(config["name"]).from_config(config, Path(run_dir), training=training)
