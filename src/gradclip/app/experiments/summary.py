"""The readable end-of-run summary printed by ``gradclip train``."""

from __future__ import annotations

from typing import Any

from gradclip.app.config import RunConfig


def format_number(value: Any) -> str:
    """Four significant digits for floats, ``str`` for the rest."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_item(value: Any) -> str:
    """A number, or a dict as ``key value, key value``."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {format_nested(item)}" for key, item in value.items())
    return format_number(value)


def format_nested(value: Any) -> str:
    """A number, or a dict inside a dict as ``(key value, key value)``."""
    return f"({format_item(value)})" if isinstance(value, dict) else format_number(value)


def format_scores(scores: dict[str, Any]) -> list[str]:
    """One ``name: value`` line per scalar score; nested dicts (per label) one line per key."""
    lines = []
    for name, value in scores.items():
        if isinstance(value, dict):
            lines.append(f"  {name}:")
            lines.extend(f"    {key}: {format_item(item)}" for key, item in value.items())
        else:
            lines.append(f"  {name}: {format_number(value)}")
    return lines


def format_summary(summary: dict[str, Any], config: RunConfig) -> str:
    """Status, steps, time, clipping counts, validation scores and the success verdict."""
    train = config.train
    lines = [
        f"{summary['status']} after {summary['step']} of {train.total_steps} steps in "
        f"{summary['seconds']:.1f} s ({summary['task']}, {config.model.cell}, clip {train.clip})",
        f"  final training loss: {format_number(summary['final_train_loss'])}",
        f"  max gradient norm: {summary['max_grad_norm']:.4g}; steps clipped: "
        f"{summary['clipped_steps']}, skipped: {summary['skipped_steps']}, with non-finite "
        f"loss: {summary['nonfinite_loss_steps']}",
    ]
    if summary["first_nonfinite_step"] is not None:
        lines.append(f"  first non-finite loss at step {summary['first_nonfinite_step']}")
    if summary.get("data"):
        lines.append(f"data: {format_item(summary['data'])}")
    if summary.get("eval"):
        lines.append("validation:")
        lines.extend(format_scores({name: value for name, value in summary["eval"].items()
                                    if name != "success"}))
    if summary.get("success_criterion"):
        verdict = "learnt" if summary.get("success") else "not learnt"
        lines.append(f"task {verdict} (criterion: {summary['success_criterion']})")
    return "\n".join(lines)
