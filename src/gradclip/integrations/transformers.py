"""Hugging Face ``transformers.Trainer``: run any gradclip strategy where the Trainer clips.

``Trainer(model, args, ..., callbacks=[GradClipCallback("zclip")])`` with
``TrainingArguments(max_grad_norm=0.0)``. Where it runs, read from ``Trainer._inner_training_loop``
(transformers 5.x): on the last micro-batch of an accumulation window the Trainer measures the
gradient norm (``accelerator.clip_grad_norm_``, which unscales fp16 AMP gradients first, even with
``max_grad_norm=0`` where it clips at ``inf``), then calls the callbacks' ``on_pre_optimizer_step``,
then ``optimizer.step()``. So the callback clips there: once per optimizer step, on the whole
accumulated gradient, after unscaling (``unscale_once_`` unscales where the Trainer did not),
before the step; under FSDP2 the gradients are DTensors and gradclip reduces their norm over the
mesh. It clips ``model.named_parameters()``, the parameters the Trainer clips, in its order, so
``"norm:1.0"`` reproduces ``max_grad_norm=1.0`` to the last bit on one process.

- **Skipping.** When the step must be skipped (``Clipper.must_skip``: a non-finite gradient under
  ``nonfinite="skip"``, or an outlier step under ``SpikeSkip``), every gradient the optimizer holds is set to ``None``. A
  ``torch.optim`` optimizer skips a parameter without a gradient altogether, so the weights, Adam's
  moments, its step count and weight decay stay as they were: a real skip. Zeroed gradients would
  not be one (Adam's moments would still move the weights). This needs no wrapper around the
  Trainer's optimizer, which the Trainer builds and accelerate wraps only inside ``train()``, out of
  a callback's reach. The learning-rate schedule still advances (it follows ``global_step``).
- **Statistics.** At every logging step the Trainer's log entry gains ``grad/total_norm`` (before
  clipping, last step), ``grad/threshold`` (last step), ``grad/clipped_fraction`` (steps clipped in
  the logging window) and ``grad/skipped_steps`` (so far): in ``trainer.state.log_history``, the
  progress bar, and every callback after this one. The ``report_to`` integrations (TensorBoard,
  W&B) come *before* the user's callbacks, so they write an entry before this callback adds to it:
  call ``GradClipCallback.attach`` (``GradClipCallback("zclip").attach(trainer)``) to put the
  callback first, and they log the statistics too. Between logging steps nothing is read on the
  host (one read per logged entry; under ``"skip"`` one boolean per step).
- **Checkpoints.** The callback is an ``ExportableState``: the Trainer writes its ``state()`` (the
  clipper's state dict as JSON, and the skipped count) into ``trainer_state.json`` in every
  checkpoint, and ``train(resume_from_checkpoint=...)`` loads it back in ``on_train_begin``.

It warns once if ``max_grad_norm > 0`` (then the Trainer clips too, before this callback). DeepSpeed
steps inside its engine, out of this hook's reach: it is refused.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from gradclip.integrations.lightning import as_clipper
from gradclip.parameters import NamedTensor
from gradclip.stats import ClipStats
from gradclip.strategies.base import Clipper
from gradclip.strategies.spec import spec_string

__all__ = ["GradClipCallback"]  # the public name (docs/stability.md)
# built on first access (module __getattr__): the framework is an optional extra
GradClipCallback: type

INSTALL_HINT = "pip install 'gradclip[transformers]'"
TENSOR_TAG = "__tensor__"


def _transformers() -> Any:
    """``transformers``, imported on first use."""
    try:
        return importlib.import_module("transformers")
    except ImportError as error:
        raise ImportError(
            f"gradclip.integrations.transformers needs transformers and accelerate: {INSTALL_HINT}"
        ) from error


def state_to_json(value: Any) -> Any:
    """A state dict as plain JSON values; every tensor becomes ``{"__tensor__": dtype, ...}``.

    Exact: float32/float64 values round-trip through JSON's shortest repr (NaN and Inf as
    JSON's ``NaN``/``Infinity``). Reads every tensor on the host: call it at checkpoint time only.

    Args:
        value: a clipper's state dict (tensors, numbers, strings, ``None``, lists, str-keyed dicts).

    Returns:
        The same structure with tensors replaced by tagged dicts (tuples become lists).

    Raises:
        TypeError: a dict key that is not a string (JSON would silently turn it into one).
    """
    if isinstance(value, torch.Tensor):
        return {
            TENSOR_TAG: str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
            "values": value.detach().cpu().flatten().tolist(),
        }
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"state dict keys must be strings to go into JSON, got {key!r}")
        return {key: state_to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [state_to_json(item) for item in value]
    return value


def state_from_json(value: Any) -> Any:
    """The inverse of ``state_to_json`` (tensors come back on the CPU).

    Args:
        value: what ``state_to_json`` returned, after a JSON round trip.

    Returns:
        The state dict, ready for ``clipper.load_state_dict``.
    """
    if isinstance(value, dict) and TENSOR_TAG in value:
        dtype = getattr(torch, value[TENSOR_TAG])
        return torch.tensor(value["values"], dtype=dtype).reshape(value["shape"])
    if isinstance(value, dict):
        return {key: state_from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [state_from_json(item) for item in value]
    return value


def unscale_once_(optimizer: Any) -> None:
    """Unscale fp16 AMP gradients, unless this step's gradients are unscaled already.

    transformers 5.x unscales before ``on_pre_optimizer_step`` whenever it measures the norm,
    ``max_grad_norm=0`` included; 5.0 measured (and so unscaled) only when it clipped itself.
    ``GradScaler.unscale_`` may run once per step and says so with a ``RuntimeError``: that
    refusal is the documented signal that the gradients are already true ones.

    Args:
        optimizer: the Trainer's optimizer (accelerate's ``AcceleratedOptimizer``; its
            ``scaler`` is ``None`` without fp16 AMP).

    Raises:
        RuntimeError: any other error of the scaler.
    """
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return
    try:
        scaler.unscale_(optimizer.optimizer)
    except RuntimeError as error:
        if "already been called" not in str(error):
            raise


def clip_or_skip_(
    named_parameters: Iterable[NamedTensor], clipper: Clipper, loss: Tensor | None = None
) -> tuple[ClipStats, bool]:
    """Run ``clipper`` on the gradients; when the step must be skipped, drop every gradient.

    A dropped gradient is ``None``: ``torch.optim`` optimizers skip such a parameter altogether
    (no update, no moment or step-count change, no weight decay), which makes the skip real.
    The parameters are the model's, in its order, as the Trainer clips them (the same order
    gives the same total norm to the last bit) and named, so that ``nonfinite="error"`` names
    the layer.

    Args:
        named_parameters: ``model.named_parameters()``.
        clipper: the strategy.
        loss: this step's loss, for the strategies that read it (``SpikeSkip``).

    Returns:
        The stats and whether the step is skipped (``Clipper.must_skip``).

    Raises:
        RuntimeError: a non-finite gradient under ``nonfinite="error"``.
    """
    named = list(named_parameters)
    stats = clipper.clip_(named, loss=loss)
    skipped = clipper.must_skip(stats)
    if skipped:
        for _, param in named:
            param.grad = None
    return stats, skipped


class LoggingWindow:
    """The clip statistics since the last logged entry, kept on the device until logged."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every step counted so far."""
        self.steps = 0
        self.clipped_steps: torch.Tensor | None = None
        self.last: ClipStats | None = None

    def add(self, stats: ClipStats) -> None:
        """Count one optimizer step's stats (no host sync).

        Args:
            stats: what the clipper returned for the step.
        """
        clipped = stats.clipped.to(torch.int64)
        self.clipped_steps = clipped if self.clipped_steps is None else self.clipped_steps + clipped
        self.last = stats
        self.steps += 1

    def summary(self, prefix: str = "grad/") -> dict[str, float]:
        """The window as loggable floats (one host read), then an empty window.

        Args:
            prefix: put before every key.

        Returns:
            ``total_norm`` and ``threshold`` of the last step, ``clipped_fraction`` of the
            window; ``{}`` for an empty window; no ``threshold`` where it is ``None``.
        """
        if self.last is None or self.clipped_steps is None:
            return {}
        device = self.last.total_norm.device
        values = {
            "total_norm": self.last.total_norm,
            "clipped_fraction": self.clipped_steps.float() / self.steps,
        }
        if self.last.threshold is not None:
            values["threshold"] = self.last.threshold
        stacked = torch.stack([value.float().reshape(()).to(device) for value in values.values()])
        self.reset()
        return {prefix + key: number for key, number in zip(values, stacked.tolist(), strict=True)}


class _GradClipCallback:
    """A ``transformers.TrainerCallback`` running ``clipper`` in ``on_pre_optimizer_step``.

    Use with ``TrainingArguments(max_grad_norm=0.0)``; see the module docstring for where it
    runs, how a step is skipped, where the statistics go and how checkpoints carry the clipper.

    Args:
        spec_or_clipper: a gradclip strategy, or a spec string (``"zclip"``,
            ``"norm:1.0,nonfinite=skip"``).
        log: add the statistics to the Trainer's log entries.

    Attributes:
        clipper: the strategy.
        last_stats: the latest ``ClipStats`` (on the device), or ``None``.
        skipped_steps: optimizer steps skipped so far (restored on resume).

    Raises:
        TypeError: ``spec_or_clipper`` is neither a clipper nor a string.
        ValueError: a bad spec string.
    """

    def __init__(self, spec_or_clipper: Clipper | str, log: bool = True) -> None:
        self.clipper = as_clipper(spec_or_clipper)
        self.log = log
        self.last_stats: ClipStats | None = None
        self.skipped_steps = 0
        self.window = LoggingWindow()
        self._warned_double_clipping = False

    def attach(self, trainer: Any) -> Any:
        """Make this the first callback of ``trainer``, ahead of its ``report_to`` integrations.

        The Trainer places the integrations before the callbacks it is given, and each logs an
        entry as soon as it sees it; first in line, this callback adds the statistics before
        they do, so TensorBoard and W&B log them too.

        Args:
            trainer: a ``transformers.Trainer`` (with or without this callback already).

        Returns:
            ``trainer``.
        """
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return trainer

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """At the end of ``Trainer.__init__``: refuse a setting that would lose the clipper.

        Raises:
            ValueError: ``restore_callback_states_from_checkpoint=True`` with a clipper that
                has no spec string (the Trainer could not rebuild it).
        """
        if args.restore_callback_states_from_checkpoint and self._spec() is None:
            raise ValueError(
                "restore_callback_states_from_checkpoint=True rebuilds callbacks from their "
                f"arguments, and {self.clipper!r} has no spec string; leave it False "
                "(GradClipCallback restores its clipper from the checkpoint by itself)"
            )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Before the first step: warn once about a second clipper; restore on resume.

        Raises:
            ValueError: under DeepSpeed (it clips and steps inside its engine).
        """
        if getattr(args, "deepspeed", None):
            raise ValueError(
                "GradClipCallback cannot clip under DeepSpeed, which clips and steps inside its "
                "engine; use DeepSpeed's gradient_clipping, or FSDP2 with gradclip"
            )
        if args.max_grad_norm and args.max_grad_norm > 0 and not self._warned_double_clipping:
            self._warned_double_clipping = True
            warnings.warn(
                f"TrainingArguments.max_grad_norm={args.max_grad_norm} makes the Trainer clip "
                f"before GradClipCallback({self.clipper!r}) does: two clippers run. Pass "
                "max_grad_norm=0.0 to let gradclip clip alone.",
                UserWarning,
                stacklevel=2,
            )
        self._restore(state)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Once per optimizer step, after accumulation: unscale (fp16), then clip or skip."""
        unscale_once_(kwargs["optimizer"])
        self.last_stats, skipped = clip_or_skip_(kwargs["model"].named_parameters(), self.clipper)
        self.skipped_steps += int(skipped)
        self.window.add(self.last_stats)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any], **kwargs: Any) -> None:
        """Add the window's ``grad/*`` statistics to the log entry and to ``log_history``."""
        if not self.log or self.window.steps == 0:
            return
        summary = self.window.summary()
        summary["grad/skipped_steps"] = self.skipped_steps
        logs.update(summary)
        if state.log_history:
            # Trainer.log appended a copy of ``logs`` just before calling on_log
            state.log_history[-1].update(summary)

    def state(self) -> dict[str, Any]:
        """What ``trainer_state.json`` keeps (``ExportableState``): arguments, counts, clipper.

        Returns:
            ``{"args": ..., "attributes": ..., "clipper": ...}``, JSON-safe.
        """
        # "args" and "attributes" are what the Trainer reads to rebuild the callback
        # (restore_callback_states_from_checkpoint=True); "clipper" is read by _restore.
        return {
            "args": {"spec_or_clipper": self._spec(), "log": self.log},
            "attributes": {"skipped_steps": self.skipped_steps},
            "clipper": state_to_json(self.clipper.state_dict()),
        }

    def _spec(self) -> str | None:
        try:
            return spec_string(self.clipper)
        except ValueError:
            return None

    def _restore(self, state: Any) -> None:
        """Load the clipper's state from ``state`` (read from the checkpoint on resume)."""
        saved = state.stateful_callbacks.get(type(self).__name__)
        if saved is None:
            return
        if isinstance(saved, list):
            raise ValueError(
                "one GradClipCallback per Trainer: combine strategies in one clipper instead"
            )
        self.clipper.load_state_dict(state_from_json(saved["clipper"]))
        self.skipped_steps = int(saved["attributes"]["skipped_steps"])


def __getattr__(name: str) -> Any:
    # GradClipCallback subclasses transformers' TrainerCallback: built on first access (once),
    # so that importing this module does not import transformers.
    if name == "GradClipCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _callback_class() -> type:
    """``GradClipCallback``: the methods above, on transformers' ``TrainerCallback``."""
    trainer_callback = _transformers().trainer_callback
    bases = (_GradClipCallback, trainer_callback.TrainerCallback, trainer_callback.ExportableState)
    namespace = {"__module__": __name__, "__qualname__": "GradClipCallback",
                 "__doc__": _GradClipCallback.__doc__}
    return type("GradClipCallback", bases, namespace)
