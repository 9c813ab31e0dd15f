"""Adaptive gradient clipping as a strategy (``AGC``), with per-group settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradclip.agc import clip_units_, clip_units_with_norm_
from gradclip.distributed import any_on_any_rank
from gradclip.functional import pre_clip_norm
from gradclip.nonfinite import check_policy, false_like, skipped_flag, zero_if_skipped_
from gradclip.parameters import NamedTensor, ParamsLike, check_positive_number, check_threshold
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.groups import all_grads, all_named_params, param_groups


def check_agc_options(clipping: float | None, eps: float) -> dict[str, Any]:
    """Validated ``AGC`` options; ``clipping=None`` (groups only) leaves a group unclipped."""
    if clipping is not None:
        clipping = check_threshold(clipping, "clipping")
    return {"clipping": clipping, "eps": check_positive_number(eps, "eps", allow_zero=True)}


class AGC(Clipper):
    """Adaptive gradient clipping: each unit's gradient norm at most ``clipping`` times its weight's.

    Per unit ``i`` (an output row/channel; a whole bias or scalar):
    ``G_i <- G_i * clipping * max(||W_i||, eps) / ||G_i||`` where that ratio is exceeded
    (the maths of ``gradclip.adaptive_clip_grad_``, matching ``optax.adaptive_grad_clip``).
    Use it to train without normalisation layers or with large batches; NFNets leave the
    final linear layer unclipped, which parameter groups express::

        AGC(0.01).clip_([{"params": body}, {"params": head, "clipping": None}])

    ``ClipStats.threshold`` is ``None`` (the limit is per unit, not one norm); ``total_norm``
    is the global L2 norm before clipping; ``clipped`` says whether any unit was scaled.

    Args:
        clipping: the largest ratio of a unit's gradient norm to its weight norm.
        eps: the smallest weight norm used in that ratio (so zero-initialised units move).
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: ``clipping`` or ``eps`` not a positive finite number, or an unknown
            ``nonfinite``.

    References:
        Brock, De, Smith & Simonyan, 2021, "High-Performance Large-Scale Image Recognition
        Without Normalization" (arXiv 2102.06171).
    """

    kind = "agc"

    def __init__(
        self,
        clipping: float = 0.01,
        eps: float = 1e-3,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        if clipping is None:
            raise ValueError("clipping must be a positive finite number, got None")
        options = check_agc_options(clipping, eps)
        self.clipping: float = options["clipping"]
        self.eps: float = options["eps"]
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        defaults = {"clipping": self.clipping, "eps": self.eps}
        groups = param_groups(parameters, defaults, check_agc_options)
        if len(groups) == 1 and groups[0].options["clipping"] is not None:
            # One group: the total norm comes from the unit norms, without a pass of its own.
            total_norm, clipped = clip_units_with_norm_(
                groups[0].named_params, **groups[0].options, policy=self.nonfinite,
                process_group=self.process_group,
            )
            clipped = any_on_any_rank(clipped.to(total_norm.device), all_grads(groups),
                                      self.process_group)
            return ClipStats(total_norm, None, clipped, skipped_flag(self.nonfinite, total_norm))
        total_norm = pre_clip_norm(
            all_named_params(groups), self.nonfinite, process_group=self.process_group
        )
        clipped = false_like(total_norm)
        for group in groups:
            if group.options["clipping"] is not None:
                clipped = _clip_units_(
                    group.named_params, **group.options, clipped=clipped,
                    process_group=self.process_group,
                )
        clipped = any_on_any_rank(clipped, all_grads(groups), self.process_group)
        skipped = zero_if_skipped_(all_grads(groups), self.nonfinite, total_norm)
        return ClipStats(total_norm, None, clipped, skipped)

    def hyperparameters(self) -> dict[str, Any]:
        return {"clipping": self.clipping, "eps": self.eps, "nonfinite": self.nonfinite}


def _clip_units_(
    named_params: list[NamedTensor],
    clipping: float,
    eps: float,
    clipped: Tensor,
    process_group: Any = None,
) -> Tensor:
    """Scale each unit's gradient by its AGC coefficient; ``clipped`` or-ed with "some unit was"."""
    # Sharded tensors: every unit norm reduced first, one all-reduce per group of ranks.
    return clipped | clip_units_(named_params, clipping, eps, process_group).to(clipped.device)
