"""The protocol every clipping strategy follows: ``clip_(parameters, loss=None) -> ClipStats``."""

from __future__ import annotations

import functools
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from gradclip._kernels import representable_bound
from gradclip.parameters import ParamsLike
from gradclip.stats import ClipStats
from gradclip.strategies.state import KIND, check_state

__all__ = ["ClipStats", "Clipper", "describe", "limit_tensor"]


class Clipper(ABC):
    """A stateful clipping strategy. Call ``clip_`` after ``backward()``, once per optimizer step.

    Subclasses keep all threshold bookkeeping in tensors so that ``clip_`` never synchronises
    with the host, and make ``state_dict``/``load_state_dict`` carry everything a resumed run
    needs to reproduce the same thresholds. ``kind`` is the strategy's spec name; its state
    dicts carry it, and a state of another kind is refused at load time.

    Attributes:
        kind: the spec name (``"norm"``, ``"zclip"``, ...).
        nonfinite: the non-finite policy, ``"error"``, ``"skip"`` or ``"propagate"``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (``None``: this process's gradients and DTensor meshes only); settable.
    """

    kind: ClassVar[str]
    nonfinite: str
    # The ranks holding shards of hand-sharded gradients (``process_group=``), or None:
    # norms and flags are then all-reduced over it, so every rank decides alike.
    process_group: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        clip = cls.__dict__.get("clip_")
        if clip is not None and "loss" not in inspect.signature(clip).parameters:
            # the deprecation path (docs/stability.md): the old signature, wrapped
            cls.clip_ = _accepting_loss(cls, clip)  # type: ignore[method-assign]

    @abstractmethod
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        """Clip the gradients of ``parameters`` in place and report what happened.

        Args:
            parameters: parameters, one parameter, ``named_parameters()`` pairs, or
                optimizer-style groups (``gradclip.strategies.groups``).
            loss: this step's loss (a 0-dim tensor, the same on every rank), for strategies
                that watch it (``SpikeSkip``); every other strategy ignores it, so callers
                may always pass it.

        Returns:
            What this step saw and did, on the device.

        Raises:
            RuntimeError: a non-finite gradient under ``nonfinite="error"``.
        """

    @property
    def may_skip(self) -> bool:
        """Whether ``ClipStats.skipped`` can ever be true: then the optimizer step must be
        guarded by a host read of it (under ``nonfinite="skip"``, or a skipping strategy)."""
        return self.nonfinite == "skip"

    def must_skip(self, stats: ClipStats) -> bool:
        """Whether the optimizer step must not run after this clip.

        Reads ``stats.skipped`` on the host (one sync) only where it can be true
        (``may_skip``); otherwise answers ``False`` without a sync.

        Args:
            stats: what ``clip_`` returned for this step.

        Returns:
            ``True`` when the step was skipped (its gradients are zeroed).
        """
        return self.may_skip and bool(stats.skipped)

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a checkpoint (history, EMAs), with the strategy's ``kind``."""
        return {KIND: self.kind}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, once its kind, keys, types and shapes check.

        Args:
            state_dict: the output of ``state_dict()`` (possibly from a checkpoint; one
                without ``"kind"``, written before the key existed, is read as this kind).

        Raises:
            ValueError: a state of another strategy, or one this strategy cannot hold (a
                non-empty state for a strategy that keeps none).
        """
        if isinstance(state_dict, dict) and set(state_dict) - {KIND}:
            raise ValueError(
                f"{type(self).__name__} keeps no state, got a state dict with "
                f"{sorted(set(state_dict) - {KIND}, key=str)}"
            )
        check_state(self, state_dict, {})

    def with_nonfinite(self, nonfinite: str) -> Clipper:
        """A new clipper with the same hyper-parameters and ``process_group`` under another
        non-finite policy (no state carried over).

        Args:
            nonfinite: ``"error"``, ``"skip"`` or ``"propagate"``.

        Returns:
            The new clipper.
        """
        hyperparameters = {**self.hyperparameters(), "nonfinite": nonfinite}
        # every strategy's constructor takes its hyper-parameters and process_group=
        rebuild: Callable[..., Clipper] = type(self)
        return rebuild(**hyperparameters, process_group=self.process_group)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keywords that rebuild this clipper (its spec string, its ``repr``)."""
        return {}

    def __repr__(self) -> str:
        return describe(self, self.hyperparameters())


def _accepting_loss(cls: type, clip: Callable[..., ClipStats]) -> Callable[..., ClipStats]:
    """The deprecation path of a subclass written for ``clip_(parameters)``: callers now
    pass ``loss=``; it is dropped for that subclass, with a warning when the class is made."""
    warnings.warn(
        f"{cls.__qualname__}.clip_ takes no 'loss' argument; callers pass clip_(parameters, "
        "loss=...) now: add 'loss=None' to its signature (it is ignored for now)",
        DeprecationWarning,
        stacklevel=4,
    )

    @functools.wraps(clip)
    def clip_(self: Clipper, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        return clip(self, parameters)

    return clip_


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


def limit_tensor(value: float, device: torch.device) -> Tensor:
    """A float hyper-parameter as the 0-dim ``ClipStats.threshold`` on ``device``.

    In the default dtype (float32); beyond its range, the value it rounds to (``inf``),
    where ``torch.full`` would raise an overflow error.

    Args:
        value: the limit (``max_norm``, ``clip_value``).
        device: where the stats live.

    Returns:
        The 0-dim tensor.
    """
    dtype = torch.get_default_dtype()
    return torch.full((), representable_bound(value, dtype), dtype=dtype, device=device)
