"""``ClippedOptimizer``: an optimizer whose ``step()`` clips first, and skips when it must."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gradclip.fused import can_fuse, fused_clip_step
from gradclip.stats import ClipStats
from gradclip.strategies.base import Clipper
from gradclip.strategies.norm import NormClip
from gradclip.strategies.spec import from_spec


class ClippedOptimizer(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that ``step()`` runs ``clipper.clip_`` on its parameters first.

    ``clipper`` is a strategy or a spec string (``"zclip"``, ``"norm:1.0"``).

    ``step()`` = ``clip_()`` (the clipper on every parameter of every group; its
    ``ClipStats`` kept in ``last_stats``) then ``step_optimizer(stats)``, which steps
    unless the step must be skipped. A step is skipped under the clipper's ``"skip"`` policy
    with a non-finite gradient, and whenever a skipping strategy (``SpikeSkip``, alone or in a
    chain) flags an outlier: the gradients are zeroed, but a zero gradient would still move
    the weights through momentum, Adam's moments or weight decay, so the optimizer must not
    step at all. Deciding that is a host decision: for a clipper that may skip
    (``clipper.may_skip``) each ``step()`` reads one boolean from the device (one sync);
    otherwise ``step()`` never synchronises beyond what the optimizer itself does.
    ``step(loss=loss)`` hands the step's loss to the clipper (``SpikeSkip`` watches it); with
    a ``closure``, the loss it returns is handed over. Skipped steps are counted in
    ``skipped_steps``. With a fused optimizer (``fused=True``) and ``NormClip``, the clip runs
    inside the optimizer's kernel instead (``gradclip.fused``): same result, one pass less.

    Everything else (``param_groups``, ``state``, ``zero_grad``, ``add_param_group``, learning
    rate schedulers) goes to the wrapped optimizer. ``state_dict()`` holds the optimizer's and
    the clipper's state. The parameters alone are given to the clipper (not the group dicts,
    whose keys such as Adam's ``eps`` could collide with a strategy's hyper-parameters).
    Under AMP, call ``scaler.unscale_(optimizer.optimizer)`` before ``step()`` (a
    ``GradScaler`` steps the inner optimizer itself); closures that the optimizer must call
    several times (LBFGS) are not supported.

    Args:
        optimizer: any ``torch.optim.Optimizer``; it keeps its groups, state and hooks.
        clipper: a strategy, or a spec string for ``gradclip.from_spec``.

    Raises:
        TypeError: ``clipper`` is neither a ``Clipper`` nor a string.
        ValueError: a spec string ``gradclip.from_spec`` does not accept.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, clipper: Clipper | str) -> None:
        # Not Optimizer.__init__: the wrapped optimizer owns the groups, state and hooks.
        if isinstance(clipper, str):
            clipper = from_spec(clipper)
        if not isinstance(clipper, Clipper):
            raise TypeError(f"clipper must be a gradclip Clipper, got {type(clipper).__name__}")
        if not (isinstance(getattr(optimizer, "param_groups", None), list)
                and callable(getattr(optimizer, "step", None))):
            raise TypeError("optimizer must be a torch optimizer (param_groups and step), got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.clipper = clipper
        self.last_stats: ClipStats | None = None
        self.skipped_steps = 0

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # not yet set (unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)  # Optimizer's would keep only groups and state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # Optimizer's attributes become read-only properties that forward to the wrapped optimizer.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]  # forwards
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]  # forwards
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]  # forwards
        return self.optimizer.defaults

    def parameters(self) -> list[Tensor]:
        """Every parameter of every group, in order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def clip_(self, loss: Tensor | None = None) -> ClipStats:
        """Clip the gradients of every parameter; keep and return the stats.

        Args:
            loss: this step's loss, for clippers that watch it (``SpikeSkip``).

        Returns:
            The clipper's stats.
        """
        self.last_stats = self.clipper.clip_(self.parameters(), loss=loss)
        return self.last_stats

    def must_skip(self, stats: ClipStats) -> bool:
        """Whether this step must not reach the optimizer (``Clipper.must_skip``: one host read
        where the clipper may skip).

        Args:
            stats: what the clipper returned for this step.

        Returns:
            Whether the step was skipped.
        """
        return self.clipper.must_skip(stats)

    def step_optimizer(self, stats: ClipStats) -> None:
        """Step the wrapped optimizer unless ``stats`` say the step is skipped; count skips.

        Args:
            stats: what the clipper returned for this step.
        """
        if self.must_skip(stats):
            self.skipped_steps += 1
            return
        self.optimizer.step()

    def step(
        self, closure: Callable[[], Any] | None = None, *, loss: Tensor | None = None
    ) -> Any:
        """Run ``closure`` (if given, with grad enabled), clip, then step unless skipped.

        Args:
            closure: re-evaluates the model and returns the loss, as for any optimizer.
            loss: this step's loss (detached is fine), handed to the clipper; by default the
                closure's.

        Returns:
            The closure's loss, or ``None``.
        """
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        if loss is None and isinstance(result, Tensor):
            loss = result
        if isinstance(self.clipper, NormClip) and can_fuse(self.optimizer, self.clipper):
            # gradclip.fused: NormClip rides in a fused optimizer's grad_scale (one read pass),
            # "skip" in its found_inf; the skip is still counted (the same one sync).
            self.last_stats = fused_clip_step(self.optimizer, self.clipper)
            self.skipped_steps += int(self.must_skip(self.last_stats))
            return result
        self.step_optimizer(self.clip_(loss))
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "clipper": self.clipper.state_dict(),
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned.

        Args:
            state_dict: ``{"optimizer", "clipper", "skipped_steps"}`` from ``state_dict()``.

        Raises:
            TypeError: ``state_dict`` is not a dict.
            ValueError: it lacks ``optimizer`` or ``clipper`` (a plain optimizer's state,
                for example: load that into the wrapped optimizer instead).
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict from ClippedOptimizer.state_dict(), "
                            f"got {type(state_dict).__name__}")
        missing = [key for key in ("optimizer", "clipper") if key not in state_dict]
        if missing:
            hint = (" (this is a plain optimizer's state: load it with "
                    "clipped.optimizer.load_state_dict)" if "param_groups" in state_dict else "")
            raise ValueError(f"state_dict must come from ClippedOptimizer.state_dict(); it "
                             f"lacks {', '.join(missing)}{hint}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.clipper.load_state_dict(state_dict["clipper"])
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))

    def __repr__(self) -> str:
        return f"ClippedOptimizer({self.optimizer!r}, {self.clipper!r})"
