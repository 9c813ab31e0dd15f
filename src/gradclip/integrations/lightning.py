"""PyTorch Lightning: run any gradclip strategy at the moment Lightning clips.

Lightning calls ``configure_gradient_clipping`` (and, just before it, the callbacks'
``on_before_optimizer_step``) once per optimizer step: after the closure has run every
backward of the accumulation window, after AMP's ``scaler.unscale_``, and before
``optimizer.step``. So a strategy run there sees the true, accumulated gradient, never a
scaled one or a single micro-batch (``lightning/pytorch/plugins/precision/amp.py``,
``precision.py::_after_closure``). Two ways in:

- ``GradClipMixin``: ``class Model(GradClipMixin, L.LightningModule)`` with ``self.clipper``
  set in ``__init__``; its ``configure_gradient_clipping`` runs the clipper, and the clipper's
  state goes into Lightning checkpoints.
- ``GradClipCallback(clipper)``: ``Trainer(callbacks=[GradClipCallback("zclip")])``, for any
  module you cannot change; it runs in ``on_before_optimizer_step`` (manual optimization too).

Both hand the step's loss to the clipper (``SpikeSkip`` watches it): the losses Lightning
backpropagates in the window (``on_before_backward``, already divided by
``accumulate_grad_batches``) are summed on the device, and unscaled under fp16 AMP. Both log
``grad/total_norm``, ``grad/threshold``, ``grad/clipped`` and ``grad/skipped`` (one line per
step, not one per parameter). The mixin replaces Lightning's clipping (it ignores
``gradient_clip_val``); with the callback, leave ``gradient_clip_val`` unset, or Lightning clips
a second time. On a skipped step (policy ``"skip"`` and a non-finite gradient, or an outlier
step under ``SpikeSkip``) every gradient is set to ``None``, so the optimizer leaves every
parameter, and its state, untouched: that decision reads one boolean on the host, only for a
clipper that may skip. With fp16 AMP, ``"error"`` would
raise on the overflows the scaler is meant to absorb: prefer ``"skip"`` or the default.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor

from gradclip.stats import ClipStats
from gradclip.strategies.base import Clipper
from gradclip.strategies.spec import from_spec

__all__ = ["GradClipCallback", "GradClipMixin"]  # the public names (docs/stability.md)
# built on first access (module __getattr__): the framework is an optional extra
GradClipCallback: type

CHECKPOINT_KEY = "gradclip_clipper"


def _lightning() -> Any:
    """``lightning.pytorch`` (or ``pytorch_lightning``), imported on first use."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "gradclip.integrations.lightning needs PyTorch Lightning: "
        "pip install 'gradclip[lightning]'"
    )


def as_clipper(clipper: Clipper | str) -> Clipper:
    """A clipper, or the one a spec string names.

    Args:
        clipper: a clipper or a spec string.

    Returns:
        The clipper.

    Raises:
        TypeError: anything else.
        ValueError: a bad spec string.
    """
    clipper = from_spec(clipper) if isinstance(clipper, str) else clipper
    if not isinstance(clipper, Clipper):
        raise TypeError(f"clipper must be a gradclip Clipper or a spec string, got {clipper!r}")
    return clipper


class LossWindow:
    """The losses backpropagated since the last optimizer step, summed on the device."""

    def __init__(self) -> None:
        self.total: Tensor | None = None

    def add(self, loss: Tensor) -> None:
        """Count one backpropagated loss (``on_before_backward``'s; scaled under fp16 AMP).

        Args:
            loss: the loss Lightning is about to backpropagate.
        """
        loss = loss.detach().float()
        self.total = loss if self.total is None else self.total + loss

    def take(self, trainer: Any) -> Tensor | None:
        """The window's loss, unscaled by the trainer's ``GradScaler``; then an empty window.

        Args:
            trainer: the Lightning ``Trainer`` (its precision plugin may hold a scaler).

        Returns:
            The loss, or ``None`` when none was seen (or the scale cannot be read without a
            host sync).
        """
        total, self.total = self.total, None
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if total is None or scaler is None or not scaler.is_enabled():
            return total
        # The scale as a device tensor: get_scale() would read it on the host.
        scale = getattr(scaler, "_get_scale_async", None)
        return None if scale is None else total / scale().to(total.device)


def clip_optimizer_gradients_(
    module: Any, optimizer: torch.optim.Optimizer, clipper: Clipper, log: bool = True,
    loss: Tensor | None = None,
) -> tuple[ClipStats, bool]:
    """Clip every gradient ``optimizer`` will apply; on a skipped step, drop them all; log.

    Args:
        module: the ``LightningModule`` whose ``log_dict`` gets the stats.
        optimizer: the optimizer about to step.
        clipper: the strategy.
        log: whether to log the stats.
        loss: the step's loss, for clippers that watch it.

    Returns:
        The stats and whether the step was skipped.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = clipper.clip_(params, loss=loss)
    skipped = clipper.must_skip(stats)
    if skipped:
        for param in params:
            param.grad = None  # torch optimizers skip parameters without a gradient
    if log:
        module.log_dict(stats_to_log(stats), on_step=True, on_epoch=False)
    return stats, skipped


def stats_to_log(stats: ClipStats, prefix: str = "grad/") -> dict[str, torch.Tensor]:
    """The stats as loggable float tensors (still on the device).

    Args:
        stats: what a clipper returned.
        prefix: put before every key.

    Returns:
        ``{prefix + field: float tensor}``; no threshold key where it is ``None``.
    """
    logged = {
        f"{prefix}total_norm": stats.total_norm.float(),
        f"{prefix}clipped": stats.clipped.float(),
        f"{prefix}skipped": stats.skipped.float(),
    }
    if stats.threshold is not None:
        logged[f"{prefix}threshold"] = stats.threshold.float()
    return logged


class GradClipMixin:
    """``LightningModule`` mixin: ``configure_gradient_clipping`` runs ``self.clipper``.

    Set ``self.clipper`` (a strategy or a spec string) in ``__init__``; ``self.last_clip_stats``
    holds the latest stats, ``self.skipped_steps`` counts skipped steps. Put the mixin first:
    ``class Model(GradClipMixin, L.LightningModule)``. ``log_clip_stats = False`` turns logging off.
    """

    clipper: Clipper | str
    log_clip_stats: bool = True

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping moment (after accumulation and the AMP unscale): run the clipper.

        Args:
            optimizer: the optimizer about to step; its parameters are clipped.
            gradient_clip_val: Lightning's own setting, ignored (the clipper decides).
            gradient_clip_algorithm: Lightning's own setting, ignored.
        """
        self.clipper = as_clipper(self.clipper)
        loss = self._loss_window().take(getattr(self, "trainer", None))
        stats, skipped = clip_optimizer_gradients_(
            self, optimizer, self.clipper, self.log_clip_stats, loss
        )
        self.last_clip_stats = stats
        self.skipped_steps = getattr(self, "skipped_steps", 0) + int(skipped)

    def on_before_backward(self, loss: Tensor) -> None:
        """Add each backpropagated loss of the window (``SpikeSkip`` watches their sum)."""
        self._loss_window().add(loss)
        # the LightningModule after the mixin in the MRO defines it; the mixin alone does not
        super().on_before_backward(loss)  # type: ignore[misc]

    def _loss_window(self) -> LossWindow:
        # The mixin has no __init__ of its own: the window is made on first use.
        if getattr(self, "_gradclip_losses", None) is None:
            self._gradclip_losses = LossWindow()
        return self._gradclip_losses

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the clipper's ``state_dict()`` into Lightning's checkpoint."""
        checkpoint[CHECKPOINT_KEY] = as_clipper(self.clipper).state_dict()
        # the LightningModule after the mixin in the MRO defines it; the mixin alone does not
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the clipper's state from Lightning's checkpoint (when it holds one)."""
        if CHECKPOINT_KEY in checkpoint:
            self.clipper = as_clipper(self.clipper)
            self.clipper.load_state_dict(checkpoint[CHECKPOINT_KEY])
        # the LightningModule after the mixin in the MRO defines it; the mixin alone does not
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def __getattr__(name: str) -> Any:
    # GradClipCallback subclasses lightning's Callback: built on first access, so that
    # importing this module does not import Lightning.
    if name == "GradClipCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CALLBACK_CLASS: type | None = None


def _callback_class() -> type:
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        pl = _lightning()

        # The base is whichever Lightning is installed, found at run time: no static type.
        class GradClipCallback(pl.Callback):  # type: ignore[name-defined,misc]
            """A Lightning ``Callback`` running ``clipper`` in ``on_before_optimizer_step``.

            Its ``state_dict`` carries the clipper's, so Lightning checkpoints resume it.
            """

            def __init__(self, clipper: Clipper | str, log: bool = True) -> None:
                self.clipper = as_clipper(clipper)
                self.log = log
                self.last_stats: ClipStats | None = None
                self.skipped_steps = 0
                self.losses = LossWindow()

            def on_before_backward(self, trainer: Any, pl_module: Any, loss: Tensor) -> None:
                self.losses.add(loss)

            def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
                self.last_stats, skipped = clip_optimizer_gradients_(
                    pl_module, optimizer, self.clipper, self.log, self.losses.take(trainer)
                )
                self.skipped_steps += int(skipped)

            def state_dict(self) -> dict[str, Any]:
                return {"clipper": self.clipper.state_dict(), "skipped_steps": self.skipped_steps}

            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                self.clipper.load_state_dict(state_dict["clipper"])
                self.skipped_steps = int(state_dict["skipped_steps"])

        GradClipCallback.__module__ = __name__
        GradClipCallback.__qualname__ = "GradClipCallback"
        _CALLBACK_CLASS = GradClipCallback
    return _CALLBACK_CLASS
