"""SpikeSkip: skip a whole step whose gradient norm or loss is an outlier of its recent past."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradclip.distributed import local_tensors
from gradclip.functional import pre_clip_norm
from gradclip.nonfinite import check_policy, false_like, skipped_flag, zero_grads_if_
from gradclip.parameters import ParamsLike, check_positive_number
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.groups import all_grads, all_named_params, param_groups
from gradclip.strategies.state import FLOAT, INTEGER, KIND, check_state, tensor_of

# OLMo-core acts once max(20, window // 2) values are held, and holds window + 1.
MIN_HISTORY = 20
MIN_WINDOW = MIN_HISTORY - 1
# Like the other strategies' buffers: a longer window is a typo.
MAX_WINDOW = 10**8
QUANTITIES = ("norm", "loss")


class SpikeSkip(Clipper):
    """Skip the step (zero every gradient, ``ClipStats.skipped``) when the global gradient norm,
    or the loss when ``loss=`` is given, lies more than ``sigma`` standard deviations from its
    rolling history.

    OLMo-core's rule (``SkipStepOptimizer.get_step_factor``, as first written, commit
    067267c): keep the last ``window + 1`` values of each quantity, the current one included;
    do nothing until ``max(20, window // 2)`` are held; then
    ``z = |x_t - mean(previous)| / std(previous)`` (unbiased std), and skip if ``z > sigma``
    for any quantity given, so that a NaN ``z`` (a constant history, a non-finite value)
    skips too. Every finite value enters the history, skipped or not, as in OLMo-core; a
    non-finite one is skipped but not recorded (recorded, it would make the next ``window``
    statistics NaN and skip them all). Later OLMo-core versions test one side only
    (``x_t - mean <= sigma * std``) and start after ``max(2, window // 2)`` values.

    Everything stays on the device: the histories are ring buffers (float64; float32 on MPS)
    and the decision a tensor, where OLMo-core combines two tensors with Python ``and`` (a
    host sync). The loss must be the same on every rank: when ``torch.distributed`` is
    initialised it is averaged over the default group first (pass ``loss=`` on every rank
    or on none). ``ClipStats.threshold`` is ``None`` and ``clipped`` false: nothing is
    clipped, a step is kept or skipped whole. Put a clipper after it to bound the steps it
    keeps (``spikeskip+norm:1.0``).

    Args:
        window: how many past values of each quantity the statistics use.
        sigma: how many standard deviations from the mean make an outlier.
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: ``window`` not an integer in range (at most ``10**8``), ``sigma`` not a
            positive number, or an unknown ``nonfinite``.

    References:
        OLMo-core, ``src/olmo_core/optim/skip_step_optimizer.py`` (Allen Institute for AI,
        2024); Megatron-LM's ``grad_norm_skip_threshold``.
    """

    kind = "spikeskip"

    def __init__(
        self,
        window: int = 128,
        sigma: float = 6.0,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        if (isinstance(window, bool) or not isinstance(window, int)
                or not MIN_WINDOW <= window <= MAX_WINDOW):
            raise ValueError(
                f"window must be an integer in {MIN_WINDOW} .. 10**8 (the rule acts once "
                f"max(20, window // 2) values are held, of window + 1), got {window!r}"
            )
        self.window = window
        self.sigma = check_positive_number(sigma, "sigma")
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group
        self.state: dict[str, Tensor] = {}  # {quantity}_history (window,), {quantity}_count

    @property
    def min_history(self) -> int:
        """Values held (the current one included) before the rule acts."""
        return max(MIN_HISTORY, self.window // 2)

    @property
    def may_skip(self) -> bool:
        return True

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        groups = param_groups(parameters, {}, fixed=("window", "sigma"))
        named = all_named_params(groups)
        total_norm = pre_clip_norm(named, self.nonfinite, process_group=self.process_group)
        self._prepare_state(total_norm.device)
        spike = self._observe("norm", total_norm)
        if loss is not None:
            spike = spike | self._observe("loss", _mean_over_ranks(loss.detach()))
        skipped = spike.to(total_norm.device) | skipped_flag(self.nonfinite, total_norm)
        zero_grads_if_(local_tensors(all_grads(groups)), skipped)
        return ClipStats(total_norm, None, false_like(total_norm), skipped)

    def _observe(self, quantity: str, value: Tensor) -> Tensor:
        """Whether ``value`` is a spike of ``quantity``'s history; then record it."""
        history, count = self.state[f"{quantity}_history"], self.state[f"{quantity}_count"]
        value = value.reshape(()).to(history)
        held = torch.isfinite(history)  # empty slots are NaN, recorded values finite
        n = held.sum()
        mean = torch.where(held, history, 0).sum() / n
        variance = torch.where(held, torch.square(history - mean), 0).sum() / (n - 1)
        z = torch.abs(value - mean) / torch.sqrt(variance)
        acting = torch.clamp(count, max=self.window) + 1 >= self.min_history
        spike = acting & ~(z <= self.sigma)  # NaN z: a spike
        finite = torch.isfinite(value)
        slot = (count % self.window).view(1)
        kept = history.index_select(0, slot).squeeze(0)
        history.index_copy_(0, slot, torch.where(finite, value, kept).view(1))
        self.state[f"{quantity}_count"] = count + finite.to(count.dtype)
        return spike

    def _prepare_state(self, device: torch.device) -> None:
        if not self.state:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            for quantity in QUANTITIES:
                self.state[f"{quantity}_history"] = torch.full(
                    (self.window,), math.nan, dtype=dtype, device=device)
                self.state[f"{quantity}_count"] = torch.zeros((), dtype=torch.int64, device=device)
        elif self.state["norm_count"].device != device:
            self.state = {key: value.to(device) for key, value in self.state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {KIND: self.kind, **{key: value.clone() for key, value in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the histories; a state of another strategy or ``window`` is refused.

        Raises:
            ValueError: not a SpikeSkip state, or histories of another length.
        """
        tensors = {}
        for quantity in QUANTITIES:
            tensors[f"{quantity}_history"] = tensor_of((self.window,), FLOAT)
            tensors[f"{quantity}_count"] = tensor_of((), INTEGER)
        entries = check_state(self, state_dict, {}, tensors)
        if entries and set(entries) != set(tensors):
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing "
                             f"{sorted(set(tensors) - set(entries))} (the histories come together)")
        self.state = {key: value.clone() for key, value in entries.items()}

    def hyperparameters(self) -> dict[str, Any]:
        return {"window": self.window, "sigma": self.sigma, "nonfinite": self.nonfinite}


def _mean_over_ranks(loss: Tensor) -> Tensor:
    """The loss averaged over the default process group, so that every rank decides alike."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loss
    dtype = torch.float64 if loss.device.type != "mps" else torch.float32
    # A copy: the all-reduce is in place, and the caller's loss must stay what it was.
    total = loss.reshape(()).to(dtype, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()
