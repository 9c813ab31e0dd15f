"""The protocol every clipping strategy follows: ``clip_(parameters) -> ClipStats``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from gradclip.parameters import ParamsLike
from gradclip.stats import ClipStats

__all__ = ["ClipStats", "Clipper", "describe"]


class Clipper(ABC):
    """A stateful clipping strategy. Call ``clip_`` after ``backward()``, once per optimizer step.

    Subclasses keep all threshold bookkeeping in tensors so that ``clip_`` never synchronises
    with the host, and make ``state_dict``/``load_state_dict`` carry everything a resumed run
    needs to reproduce the same thresholds.
    """

    nonfinite: str
    # The ranks holding shards of hand-sharded gradients (``process_group=``), or None:
    # norms and flags are then all-reduced over it, so every rank decides alike.
    process_group: Any = None

    @abstractmethod
    def clip_(self, parameters: ParamsLike) -> ClipStats:
        """Clip the gradients of ``parameters`` in place and report what happened.

        Args:
            parameters: parameters, one parameter, ``named_parameters()`` pairs, or
                optimizer-style groups (:mod:`gradclip.strategies.groups`).

        Returns:
            What this step saw and did, on the device.

        Raises:
            RuntimeError: a non-finite gradient under ``nonfinite="error"``.
        """

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a checkpoint (history, EMAs); stateless strategies: ``{}``."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned.

        Args:
            state_dict: the output of ``state_dict()`` (possibly from a checkpoint).

        Raises:
            ValueError: a non-empty state for a strategy that keeps none.
        """
        if state_dict:
            raise ValueError(
                f"{type(self).__name__} keeps no state, got a state dict with {sorted(state_dict)}"
            )

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keywords that rebuild this clipper (its spec string, its ``repr``)."""
        return {}

    def __repr__(self) -> str:
        return describe(self, self.hyperparameters())


def describe(clipper: Clipper, hyperparameters: dict[str, Any]) -> str:
    """``Name(key=value, ...)``: the constructor call that rebuilds ``clipper``.

    Args:
        clipper: any clipper.
        hyperparameters: its constructor keywords.

    Returns:
        The call, as text.
    """
    arguments = ", ".join(f"{key}={value!r}" for key, value in hyperparameters.items())
    return f"{type(clipper).__name__}({arguments})"
