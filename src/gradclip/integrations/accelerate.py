"""🤗 Accelerate custom loops: unscale, clip with any gradclip strategy, skip for real.

Where a loop written with Accelerate calls ``accelerator.clip_grad_norm_(params, 1.0)``, call
`unscale_and_clip_` with a strategy instead: it unscales fp16 AMP gradients
(``accelerator.unscale_gradients``, a no-op without fp16), runs the strategy on the true
gradients, and on a skipped step drops every gradient, so that ``optimizer.step()`` leaves
weights and optimizer state alone (and, under fp16, the scaler still steps and updates as
usual). ``NormClip(1.0)`` there gives the weights of ``accelerator.clip_grad_norm_(..., 1.0)``
to the bit.

The accelerator is passed in, so this module never imports ``accelerate`` itself; install it
with ``pip install 'gradclip[accelerate]'``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from gradclip.integrations.transformers import clip_or_skip_
from gradclip.parameters import NamedTensor
from gradclip.stats import ClipStats
from gradclip.strategies.base import Clipper
from gradclip.strategies.spec import from_spec

__all__ = ["unscale_and_clip_"]  # the public name (docs/stability.md)


def unscale_and_clip_(
    accelerator: Any,
    optimizer: Any,
    parameters: nn.Module | Iterable[NamedTensor],
    clipper: Clipper | str,
    *,
    loss: Tensor | None = None,
) -> ClipStats:
    """Unscale the gradients of ``optimizer``, then clip them with ``clipper``; once per step.

    Call it after ``accelerator.backward(loss)`` on the last micro-batch of an accumulation
    window (``accelerator.sync_gradients``), then call ``optimizer.step()`` as usual. On a
    step the strategy skips (a non-finite gradient under ``nonfinite="skip"``, a
    ``SpikeSkip`` outlier) every gradient is set to ``None``: ``torch.optim`` optimizers then
    leave those parameters, their moments and step counts untouched.

    Args:
        accelerator: the ``accelerate.Accelerator`` of the loop.
        optimizer: the optimizer ``accelerator.prepare`` returned.
        parameters: the prepared model, or its ``named_parameters()`` (names make
            ``nonfinite="error"`` name the layer).
        clipper: a gradclip strategy or a spec string (``"zclip"``, ``"norm:1.0"``).
        loss: this step's loss (detached is fine), for the strategies that read it
            (``SpikeSkip`` also skips a step whose loss is an outlier).

    Returns:
        This step's ``ClipStats``; ``stats.skipped`` or ``clipper.must_skip(stats)`` says
        whether the step was skipped.

    Raises:
        RuntimeError: called between micro-batches (``accelerator.sync_gradients`` is
            false: clipping a partial sum is the classic mistake), or a non-finite gradient
            under ``nonfinite="error"``.
        ValueError: a bad spec string.
    """
    if not getattr(accelerator, "sync_gradients", True):
        raise RuntimeError(
            "unscale_and_clip_ runs once per optimizer step: call it when "
            "accelerator.sync_gradients is true (the last micro-batch of the window)"
        )
    strategy = from_spec(clipper) if isinstance(clipper, str) else clipper
    named = parameters.named_parameters() if isinstance(parameters, nn.Module) else parameters
    accelerator.unscale_gradients(optimizer)
    stats, _ = clip_or_skip_(named, strategy, loss)
    return stats
