"""ZClip: clip gradient-norm spikes detected by the z-score of an EMA of past norms."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import CLIP_EPS, clip_coefficient
from gradclip.distributed import local_tensors
from gradclip.functional import pre_clip_norm, scale_grads_
from gradclip.nonfinite import check_policy, zero_if_skipped_
from gradclip.parameters import ParamsLike, check_positive_number, check_threshold
from gradclip.strategies.autoclip import grad_device
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.groups import all_grads, all_named_params, param_groups
from gradclip.strategies.state import BOOL, FLOAT, INTEGER, KIND, check_state, count, tensor_of

MODES = ("zscore", "percentile")
CLIP_OPTIONS = ("adaptive_scaling", "mean")


# The warm-up norms are kept in a buffer of this length at most (10^8 float32: 400 MB).
MAX_WARMUP_STEPS = 10**8

class ZClip(Clipper):
    """Clip the global L2 norm when it is an outlier against an EMA of past norms.

    Warm-up: the first ``warmup_steps`` norms are collected (clipped at ``max_grad_norm`` if
    set), then ``mean``/``var`` start as their mean and population variance. After it, with
    ``std = sqrt(var)`` and the pre-clip norm ``g``:

    - ``mode="zscore"``: ``z = (g - mean) / (std + eps)``; a spike is ``z > z_thresh``, clipped
      to ``(mean + z_thresh * std / (z / z_thresh)) * clip_factor`` (``"adaptive_scaling"``)
      or to ``mean`` (``clip_option="mean"``);
    - ``mode="percentile"``: a spike is ``g > mean + z_thresh * std``, clipped to that value.

    The limit is ``min(spike limit or g, max_grad_norm)``, applied as torch does
    (``g * limit / (g + 1e-6)`` where ``g > limit``). Then ``mean <- alpha*mean + (1-alpha)*x``
    and ``var <- alpha*var + (1-alpha)*(x - mean)^2`` with the *updated* mean, where ``x`` is
    the spike limit on a spike, else ``g``; ``skip_update_on_spike`` leaves them unchanged on
    a spike. Use it for long pre-training runs whose loss spikes come with norm spikes.

    Same numbers as the ``zclip`` package (1.0.0), including its quirks (``clip_factor``
    scales the whole adaptive limit; ``warmup_steps=0`` acts as 1). Better in cost: every
    ``if`` is a ``torch.where`` and the statistics are float64 tensors on the gradients' device
    (float32 on MPS), so there is no host sync (the reference calls ``.item()`` every step);
    the norm is the one ``torch.nn.utils`` computes, so sharded (FSDP2/DTensor) gradients
    work where the reference detects FSDP1 only. A non-finite norm never enters the
    statistics (in the reference it would poison every later limit).
    ``ClipStats.threshold`` is the limit in float64; ``None`` during the first
    ``warmup_steps`` calls when ``max_grad_norm`` is ``None``.

    Args:
        alpha: the EMA's decay for the norm's mean and variance, in ``[0, 1]``.
        z_thresh: the z-score above which a norm is a spike.
        max_grad_norm: an absolute cap on the norm (``None``: none; also the warm-up's clip).
        eps: added to the standard deviation in the z-score.
        warmup_steps: norms collected before the statistics start (``0 .. 10**8``).
        mode: ``"zscore"`` or ``"percentile"`` (see above).
        clip_option: ``"adaptive_scaling"`` or ``"mean"``: where a spike is clipped to.
        clip_factor: scales the adaptive limit.
        skip_update_on_spike: leave the statistics unchanged on a spike.
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: a hyper-parameter outside its range, an unknown ``mode``,
            ``clip_option`` or ``nonfinite``.

    References:
        Kumar, Owen, Ashraf & Madhusudhan, 2025, "ZClip: Adaptive Spike Mitigation for LLM
        Pre-Training" (arXiv 2504.02507).
    """

    kind = "zclip"

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        max_grad_norm: float | None = 1.0,
        eps: float = 1e-6,
        warmup_steps: int = 25,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
        clip_factor: float = 1.0,
        skip_update_on_spike: bool = False,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.z_thresh = check_positive_number(z_thresh, "z_thresh")
        self.max_grad_norm = None if max_grad_norm is None else check_threshold(
            max_grad_norm, "max_grad_norm"
        )
        # eps=0 divides by zero once the variance is 0 (the reference raises ZeroDivisionError).
        self.eps = check_positive_number(eps, "eps")
        if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
                or not 0 <= warmup_steps <= MAX_WARMUP_STEPS):
            raise ValueError(f"warmup_steps must be an integer in 0 .. 10**8, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.mode = _choice(mode, MODES, "mode")
        self.clip_option = _choice(clip_option, CLIP_OPTIONS, "clip_option")
        self.clip_factor = check_positive_number(clip_factor, "clip_factor")
        if not isinstance(skip_update_on_spike, bool):
            raise ValueError(f"skip_update_on_spike must be True or False, got {skip_update_on_spike!r}")
        self.skip_update_on_spike = skip_update_on_spike
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group
        self.state: dict[str, Tensor] = {}
        self.calls = 0

    @property
    def warmup_length(self) -> int:
        """Norms collected before the EMA starts (the reference initialises after >= 1)."""
        return max(self.warmup_steps, 1)

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        groups = param_groups(parameters, {}, fixed=tuple(self.hyperparameters()))
        named = all_named_params(groups)
        self._prepare_state(grad_device(named))
        total_norm = pre_clip_norm(named, self.nonfinite, process_group=self.process_group)
        norm = total_norm.to(self.state["mean"])
        warming = ~self.state["initialized"]
        spike, spike_limit = self._spike(norm)
        limit = torch.where(spike, spike_limit, norm)
        if self.max_grad_norm is not None:
            limit = torch.clamp(limit, max=self.max_grad_norm)
        coefficient, clipped = self._coefficient(total_norm, norm, limit, warming)
        grads = all_grads(groups)
        scale_grads_(local_tensors(grads), coefficient.to(total_norm.dtype), foreach=None)
        skipped = zero_if_skipped_(grads, self.nonfinite, total_norm)
        self._update_statistics(norm, spike, spike_limit, warming)
        threshold = self._threshold(limit, warming)
        self.calls += 1
        return ClipStats(total_norm, threshold, clipped.to(total_norm.device), skipped)

    def _spike(self, norm: Tensor) -> tuple[Tensor, Tensor]:
        """Bool ``spike`` and the limit a spike is clipped to (meaningless during warm-up)."""
        mean, std = self.state["mean"], torch.sqrt(self.state["var"])
        if self.mode == "percentile":
            limit = mean + self.z_thresh * std
            return norm > limit, limit
        z = (norm - mean) / (std + self.eps)
        if self.clip_option == "mean":
            return z > self.z_thresh, mean
        eta = z / self.z_thresh
        return z > self.z_thresh, (mean + (self.z_thresh * std) / eta) * self.clip_factor

    def _coefficient(
        self, total_norm: Tensor, norm: Tensor, limit: Tensor, warming: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The factor for every gradient and whether it clips: torch's rule during warm-up."""
        exceeds = norm > limit
        coefficient = torch.where(exceeds, limit / (norm + CLIP_EPS), torch.ones_like(norm))
        if self.max_grad_norm is None:
            return torch.where(warming, torch.ones_like(norm), coefficient), ~warming & exceeds
        # The reference calls torch.nn.utils.clip_grad_norm_ during warm-up: its float32 factor.
        warmup_coefficient = clip_coefficient(self.max_grad_norm, total_norm).to(norm)
        clipped = torch.where(warming, warmup_coefficient < 1, exceeds)
        return torch.where(warming, warmup_coefficient, coefficient), clipped

    def _update_statistics(self, norm: Tensor, spike: Tensor, spike_limit: Tensor, warming: Tensor) -> None:
        state, finite = self.state, torch.isfinite(norm)
        collect = warming & finite
        slot = state["collected"].clamp(max=self.warmup_length - 1).view(1)
        kept = state["warmup_norms"].index_select(0, slot).squeeze(0)
        state["warmup_norms"].index_copy_(0, slot, torch.where(collect, norm, kept).view(1))
        state["collected"] += collect.to(state["collected"].dtype)
        start = collect & (state["collected"] >= self.warmup_length)
        start_mean, start_var = _mean_and_variance(state["warmup_norms"])
        observed = torch.where(spike, spike_limit, norm)
        mean = self.alpha * state["mean"] + (1 - self.alpha) * observed
        var = self.alpha * state["var"] + (1 - self.alpha) * torch.square(observed - mean)
        update = ~warming & finite
        if self.skip_update_on_spike:
            update = update & ~spike
        state["mean"] = torch.where(start, start_mean, torch.where(update, mean, state["mean"]))
        state["var"] = torch.where(start, start_var, torch.where(update, var, state["var"]))
        state["initialized"] = state["initialized"] | start

    def _threshold(self, limit: Tensor, warming: Tensor) -> Tensor | None:
        if self.max_grad_norm is None and self.calls < self.warmup_length:
            return None
        warmup_limit = math.inf if self.max_grad_norm is None else self.max_grad_norm
        return torch.where(warming, torch.full_like(limit, warmup_limit), limit)

    def _prepare_state(self, device: torch.device) -> None:
        if not self.state:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self.state = {
                "warmup_norms": torch.full((self.warmup_length,), math.nan, dtype=dtype, device=device),
                "collected": torch.zeros((), dtype=torch.int64, device=device),
                "initialized": torch.zeros((), dtype=torch.bool, device=device),
                "mean": torch.zeros((), dtype=dtype, device=device),
                "var": torch.zeros((), dtype=dtype, device=device),
            }
        elif self.state["mean"].device != device:
            self.state = {key: value.to(device) for key, value in self.state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {KIND: self.kind, "calls": self.calls,
                **{key: value.clone() for key, value in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the statistics; a state of another strategy or shape is refused.

        Raises:
            ValueError: not a ZClip state, or one of another ``warmup_steps``.
        """
        tensors = {
            "warmup_norms": tensor_of((self.warmup_length,), FLOAT),
            "collected": tensor_of((), INTEGER),
            "initialized": tensor_of((), BOOL),
            "mean": tensor_of((), FLOAT),
            "var": tensor_of((), FLOAT),
        }
        entries = check_state(self, state_dict, {"calls": count}, tensors)
        held = set(tensors) & set(entries)
        if held and held != set(tensors):
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing "
                             f"{sorted(set(tensors) - held)} (the statistics come together)")
        self.calls = entries["calls"]
        self.state = {key: entries[key].clone() for key in tensors if key in entries}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "z_thresh": self.z_thresh,
            "max_grad_norm": self.max_grad_norm,
            "eps": self.eps,
            "warmup_steps": self.warmup_steps,
            "mode": self.mode,
            "clip_option": self.clip_option,
            "clip_factor": self.clip_factor,
            "skip_update_on_spike": self.skip_update_on_spike,
            "nonfinite": self.nonfinite,
        }


def _mean_and_variance(norms: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance, summed left to right as the reference's Python ``sum``."""
    # cumsum adds in order on the CPU, so the result is bit-identical to the reference there.
    mean = torch.cumsum(norms, 0)[-1] / norms.numel()
    variance = torch.cumsum(torch.square(norms - mean), 0)[-1] / norms.numel()
    return mean, variance


def _choice(value: object, allowed: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value.lower()
