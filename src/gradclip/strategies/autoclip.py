"""AutoClip: clip to a quantile of the gradient norms seen so far."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import clip_coefficient
from gradclip.distributed import local_tensors
from gradclip.functional import pre_clip_norm, scale_grads_
from gradclip.nonfinite import check_policy, zero_if_skipped_
from gradclip.parameters import NamedTensor, ParamsLike
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.groups import all_grads, all_named_params, param_groups
from gradclip.strategies.state import FLOAT, INTEGER, KIND, check_state, count, tensor_of

# First allocation of an unbounded history; it doubles when full.
INITIAL_CAPACITY = 1024
# A longer ring buffer is a typo: 10^8 float32 norms already take 400 MB.
MAX_HISTORY_LENGTH = 10**8


def check_autoclip_options(quantile: float, history_length: int | None) -> dict[str, Any]:
    """Validated ``AutoClip`` options: ``0 <= quantile <= 1``; ``history_length`` None or in
    ``1 .. 10**8``."""
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    if history_length is not None and (
        isinstance(history_length, bool) or not isinstance(history_length, int)
        or not 1 <= history_length <= MAX_HISTORY_LENGTH
    ):
        raise ValueError(
            f"history_length must be an integer in 1 .. 10**8 or None (all of history), "
            f"got {history_length!r}"
        )
    return {"quantile": float(quantile), "history_length": history_length}


class AutoClip(Clipper):
    """Clip the global L2 norm to the ``quantile`` of all past pre-clip norms.

    ``threshold_t = quantile_q(||g_1||, ..., ||g_{t-1}||)`` (linear interpolation, as
    ``torch.quantile``), then ``g <- g * min(threshold_t / (||g_t|| + 1e-6), 1)``; the first
    step is not clipped (threshold ``inf``). ``history_length=None`` keeps all of history, as
    the paper does; an int keeps the last ``history_length`` norms. Use it when a good fixed
    threshold is unknown or drifts during training.

    Same numbers as the ``autoclip`` package (0.2.1) ``QuantileClip(global_threshold=True)``,
    at a lower cost: the reference re-allocates its history with ``hstack`` every step, sorts it
    with ``torch.quantile``, and hands the threshold to ``torch.nn.utils.clip_grad_norm_``,
    which turns it into a Python float (a host sync every step); here the history is a preallocated NaN-filled tensor (a
    ring buffer for a finite ``history_length``, doubled when full for ``None``) and the
    threshold is ``torch.nanquantile`` over it, computed on the device without a host sync.
    A non-finite norm never enters the history (in the reference it would make every later
    threshold NaN). Note that the unbounded history still sorts ``t`` values at step ``t``
    (``torch.nanquantile`` accepts at most 2**24 values).

    Args:
        quantile: the quantile of past norms used as the threshold, in ``[0, 1]``.
        history_length: how many past norms to keep (``None``: all of them).
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: ``quantile`` outside ``[0, 1]``, ``history_length`` not a positive
            integer (at most ``10**8``), or an unknown ``nonfinite``.

    References:
        Seetharaman, Wichern, Pardo & Le Roux, 2020, "AutoClip: Adaptive Gradient Clipping
        for Source Separation Networks" (IEEE MLSP 2020).
    """

    kind = "autoclip"

    def __init__(
        self,
        quantile: float = 0.1,
        history_length: int | None = None,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        options = check_autoclip_options(quantile, history_length)
        self.quantile: float = options["quantile"]
        self.history_length: int | None = options["history_length"]
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group
        self.history: Tensor | None = None  # NaN where no norm was recorded yet
        self.recorded: Tensor | None = None  # int64 count of finite norms ever recorded
        self.calls = 0  # clip_ calls, known on the host: bounds `recorded` without a sync

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        groups = param_groups(parameters, {}, fixed=("quantile", "history_length"))
        named = all_named_params(groups)
        history, recorded = self._prepare_history(grad_device(named))
        threshold = self.threshold()
        total_norm = pre_clip_norm(named, self.nonfinite, process_group=self.process_group)
        coefficient = clip_coefficient(threshold, total_norm)
        grads = all_grads(groups)
        scale_grads_(local_tensors(grads), coefficient, foreach=None)
        skipped = zero_if_skipped_(grads, self.nonfinite, total_norm)
        self._record(total_norm, history, recorded)
        return ClipStats(total_norm, threshold.to(total_norm.device), coefficient < 1, skipped)

    def threshold(self) -> Tensor:
        """The limit for the next step: the quantile of the history, ``inf`` while it is empty."""
        if self.history is None or self.recorded is None:
            return torch.tensor(math.inf)
        quantile = torch.nanquantile(self.history, self.quantile)
        return torch.where(self.recorded > 0, quantile, torch.full_like(quantile, math.inf))

    def _prepare_history(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Allocate the history on ``device`` (or move it there); double it when it may be full.

        Returns:
            The history and the count of norms recorded in it.
        """
        if self.history is None or self.recorded is None:
            capacity = self.history_length or INITIAL_CAPACITY
            self.history = torch.full((capacity,), math.nan, dtype=torch.float32, device=device)
            self.recorded = torch.zeros((), dtype=torch.int64, device=device)
        elif self.history.device != device:
            self.history, self.recorded = self.history.to(device), self.recorded.to(device)
        if self.history_length is None and self.calls >= self.history.numel():
            grown = torch.full_like(self.history, math.nan).repeat(2)
            grown[: self.history.numel()] = self.history
            self.history = grown
        return self.history, self.recorded

    def _record(self, total_norm: Tensor, history: Tensor, recorded: Tensor) -> None:
        """Write the norm into the next slot; a non-finite norm leaves history and count as they were."""
        slot = (recorded % history.numel()).view(1)
        norm = total_norm.to(history)
        finite = torch.isfinite(norm)
        value = torch.where(finite, norm, history.index_select(0, slot).squeeze(0))
        history.index_copy_(0, slot, value.view(1))
        recorded += finite.to(recorded.dtype)  # in place: self.recorded is this tensor
        self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        if self.history is None or self.recorded is None:
            return {KIND: self.kind, "calls": self.calls}
        return {KIND: self.kind, "history": self.history.clone(),
                "recorded": self.recorded.clone(), "calls": self.calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history; a state of another strategy or shape is refused.

        Raises:
            ValueError: not an AutoClip state, or a history this clipper cannot hold (a
                ring buffer of another ``history_length``).
        """
        history = tensor_of((self.history_length,), FLOAT)
        tensors = {"history": history, "recorded": tensor_of((), INTEGER)}
        entries = check_state(self, state_dict, {"calls": count}, tensors)
        if len(set(tensors) & set(entries)) == 1:
            raise ValueError(f"{type(self).__name__}.load_state_dict: 'history' and 'recorded' "
                             "come together")
        self.calls = entries["calls"]
        self.history = entries["history"].clone() if "history" in entries else None
        self.recorded = entries["recorded"].clone() if "recorded" in entries else None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "history_length": self.history_length,
            "nonfinite": self.nonfinite,
        }


def grad_device(named_params: list[NamedTensor]) -> torch.device:
    """The device of the first gradient (where the norm will live); CPU if there is none."""
    for _, param in named_params:
        if param.grad is not None:
            return param.grad.device
    return torch.device("cpu")
