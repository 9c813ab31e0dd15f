"""Open a finished run for scoring (``gradclip eval``, ``gradclip predict``): its config,
task, model with the checkpoint's weights (``best.pt`` under ``--keep-best``) and device."""

from __future__ import annotations

import sys
from pathlib import Path

from gradclip.app.errors import UserError


def load_model(run_dir: Path, config, task, state: dict, device):
    """The run's model with the weights of its checkpoint, in eval mode."""
    import dataclasses

    from gradclip.app.models import build_model
    from gradclip.app.training.checkpoint_check import check_model

    model = build_model(task, **dataclasses.asdict(config.model))
    check_model(state["model"], model, run_dir)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError(f"the checkpoint in {run_dir} does not match its config.json") from None
    return model.to(device).eval()


def open_scoring(run_dir: Path, device_name: str):
    """The run's config, task (with its training-row hashes), model and device.

    Args:
        run_dir: a run folder written by ``gradclip train``.
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        ``(config, task, model, device)``, the model in eval mode.

    Raises:
        UserError: not a run folder, or a checkpoint that does not match its config.
    """
    from gradclip.app.training.runs import open_for_scoring
    from gradclip.app.training.setup import resolve_device

    device = resolve_device(device_name)
    config, task, state = open_for_scoring(run_dir)
    if config.train.keep_best and (Path(run_dir) / "best.pt").is_file():
        from gradclip.app.training.checkpoint import load_checkpoint

        state = load_checkpoint(run_dir, "best.pt")  # --keep-best: the best weights
        print(f"using best.pt (step {state['step']}, {state.get('metric')} "
              f"{state.get('score', float('nan')):.4f})", file=sys.stderr)
    if hasattr(task, "load_training_hashes"):
        task.load_training_hashes(run_dir)
    return config, task, load_model(run_dir, config, task, state, device), device
