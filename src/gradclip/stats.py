"""``ClipStats``: what one clip saw and did, the record every layer above the ops reads.

Strategies return it, the monitor and the framework integrations read it; it lives below
all of them so that reading it never imports the strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class ClipStats:
    """What one ``clip_`` call saw and did; every field stays on the device (no host sync).

    Attributes:
        total_norm: global gradient norm *before* clipping (0-dim tensor).
        threshold: the norm (or value) limit applied this step, or ``None`` where no limit
            applies (``NoClip``; ZClip's warm-up without ``max_grad_norm``).
        clipped: 0-dim bool tensor, whether this step changed any gradient.
        skipped: 0-dim bool tensor, whether the gradient was non-finite under the ``"skip"``
            policy (gradients zeroed; the optimizer step should be skipped).
    """

    total_norm: Tensor
    threshold: Tensor | None
    clipped: Tensor
    skipped: Tensor
