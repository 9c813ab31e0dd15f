"""AdaGC: per-tensor adaptive clipping against an EMA of each tensor's own clipped norm."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradclip._kernels import scale_
from gradclip.distributed import any_dtensor, is_dtensor, local_tensors
from gradclip.functional import per_tensor_grad_norms
from gradclip.nonfinite import check_policy, false_like, raise_if_nonfinite, zero_if_skipped_
from gradclip.parameters import ParamsLike, check_positive_number
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.groups import all_named_params, param_groups
from gradclip.strategies.state import BOOL, FLOAT, INTEGER, KIND, check_state, tensor_of

# The warm-up length is a step count; a longer one is a typo (as for ZClip's).
MAX_WARMUP_STEPS = 10**8


class AdaGC(Clipper):
    """Clip each gradient tensor against an EMA ``gamma_i`` of its own clipped norms.

    Steps count from 1. During warm-up (step < ``warmup_steps``, and for a tensor seen for
    the first time) every gradient is scaled by ``min(lambda_abs / (||g|| + eps), 1)``, with
    ``||g||`` the global L2 norm (the square root of the sum of the squared per-tensor
    norms, in at least float32), and ``gamma_i`` becomes ``||g_hat_i||`` the first time,
    ``min(gamma_i, ||g_hat_i||)`` after. Afterwards, per tensor::

        h_i = min(lambda_rel * max(gamma_i, eps) / max(||g_i||, eps), 1)
        g_i <- h_i * g_i;   gamma_i <- lerp(gamma_i, ||g_hat_i||, 1 - beta)

    The clipping rule of ``pytorch_optimizer.AdaGC`` (pytorch-optimizer 4.1.0), pulled out of
    that optimizer so that it runs before any optimizer (AdamW with the same ``eps`` trains as
    the reference does). Unlike the reference: no host sync (its ``min(tensor, float)`` and
    the global norm recomputed in its per-parameter loop; here the warm-up test is a
    ``torch.where`` on a device step counter), ``||g_hat_i||`` is ``h_i * ||g_i||`` (the
    reference measures it again: equal up to rounding), ``gamma`` is kept in at least
    float32, and a step whose global norm is not finite leaves ``gamma`` unchanged (in the
    reference it would poison every later threshold). On sharded gradients (FSDP2 DTensors,
    ``process_group=``) ``||g_i||`` is the norm of the whole logical tensor, so ``gamma`` is
    the same on every rank. ``gamma`` is kept per position in the parameter list.

    ``ClipStats.total_norm`` is the global norm before clipping; ``threshold`` is ``None``
    (the limits are per tensor); ``clipped`` says whether some ``h_i < 1``.

    Args:
        beta: the EMA's decay of each ``gamma_i``, in ``[0, 1)``.
        lambda_abs: the global norm limit during warm-up.
        lambda_rel: each tensor's limit after warm-up, relative to its ``gamma_i``.
        warmup_steps: steps clipped by ``lambda_abs`` (``0 .. 10**8``).
        eps: the floor of ``gamma_i`` and of the gradient norms in ``h_i``.
        nonfinite: ``"error"``, ``"skip"`` or ``"propagate"`` (``None``, the default: torch's
            behaviour) for a NaN/Inf gradient; see ``gradclip.nonfinite``.
        process_group: the ranks whose gradient parts join this one's in the global norm
            (pipeline stages, hand-made shards); ``None``: this process's gradients (and
            DTensor meshes) only.

    Raises:
        ValueError: a hyper-parameter outside its range, or an unknown ``nonfinite``;
            ``clip_`` raises it too when the number of parameters changes between steps.

    References:
        Wang et al., 2025, "AdaGC: Improving Training Stability for Large Language Model
        Pretraining" (arXiv 2502.11034).
    """

    kind = "adagc"

    def __init__(
        self,
        beta: float = 0.98,
        lambda_abs: float = 1.0,
        lambda_rel: float = 1.05,
        warmup_steps: int = 100,
        eps: float = 1e-8,
        *,
        nonfinite: str | None = None,
        process_group: Any = None,
    ) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")
        self.beta = float(beta)
        self.lambda_abs = check_positive_number(lambda_abs, "lambda_abs")
        self.lambda_rel = check_positive_number(lambda_rel, "lambda_rel")
        if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
                or not 0 <= warmup_steps <= MAX_WARMUP_STEPS):
            raise ValueError(f"warmup_steps must be an integer in 0 .. 10**8, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.eps = check_positive_number(eps, "eps", allow_zero=True)
        self.nonfinite = check_policy(nonfinite)
        self.process_group = process_group
        self.state: dict[str, Tensor] = {}  # step, gamma (one per parameter), seen

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        groups = param_groups(parameters, {}, fixed=tuple(self.hyperparameters()))
        named = all_named_params(groups)
        named_grads = [(name, p.grad) for name, p in named if p.grad is not None]
        if not named_grads:
            zero = torch.zeros(())
            return ClipStats(zero, None, false_like(zero), false_like(zero))
        present = [index for index, (_, p) in enumerate(named) if p.grad is not None]
        grads = [g for _, g in named_grads]
        norms = per_tensor_grad_norms(grads, 2.0, None, self.process_group)
        self._prepare_state(len(named), norms)
        wide = norms.to(self.state["gamma"].dtype)
        total_norm = _global_norm(wide, grads, self.process_group)
        if self.nonfinite == "error":
            raise_if_nonfinite(named_grads, total_norm)
        index = torch.tensor(present, device=norms.device)
        coefficients = self._coefficients(wide, index, total_norm)
        scale_(local_tensors(grads), coefficients.to(norms.dtype).unbind(), None)
        skipped = zero_if_skipped_(grads, self.nonfinite, total_norm)
        self._update(wide * coefficients, index, torch.isfinite(total_norm))
        return ClipStats(total_norm, None, (coefficients < 1).any(), skipped)

    def _coefficients(self, norms: Tensor, index: Tensor, total_norm: Tensor) -> Tensor:
        """``h_i`` of each present tensor: the warm-up scale, or the relative limit."""
        state = self.state
        warming = (state["step"] + 1 < self.warmup_steps) | ~state["seen"].index_select(0, index)
        warmup_scale = torch.clamp(self.lambda_abs / (total_norm + self.eps), max=1.0)
        gamma = state["gamma"].index_select(0, index)
        relative = self.lambda_rel * gamma.clamp_min(self.eps) / norms.clamp_min(self.eps)
        return torch.where(warming, warmup_scale, relative.clamp_max(1.0))

    def _update(self, clipped_norms: Tensor, index: Tensor, finite: Tensor) -> None:
        """``gamma`` from the clipped norms (first value, running min, then the EMA); a
        non-finite step changes nothing but the step count."""
        state = self.state
        state["step"] = state["step"] + 1
        gamma, seen = state["gamma"].index_select(0, index), state["seen"].index_select(0, index)
        warming = (state["step"] < self.warmup_steps) | ~seen
        running = torch.where(seen, torch.minimum(gamma, clipped_norms), clipped_norms)
        averaged = torch.lerp(gamma, clipped_norms, 1.0 - self.beta)
        updated = torch.where(finite, torch.where(warming, running, averaged), gamma)
        state["gamma"] = state["gamma"].index_copy(0, index, updated)
        state["seen"] = state["seen"].index_copy(0, index, seen | finite)

    def _prepare_state(self, count: int, norms: Tensor) -> None:
        """One ``gamma`` per parameter, on the norms' device; new parameters start unseen."""
        device, dtype = norms.device, torch.promote_types(norms.dtype, torch.float32)
        if not self.state:
            self.state = {"step": torch.zeros((), dtype=torch.int64, device=device),
                          "gamma": torch.zeros(0, dtype=dtype, device=device),
                          "seen": torch.zeros(0, dtype=torch.bool, device=device)}
        held = self.state["gamma"].numel()
        if count < held:
            raise ValueError(f"AdaGC keeps one gamma per parameter: got {count} parameters, "
                             f"{held} before; pass the same parameters every step")
        state = {key: value.to(device) for key, value in self.state.items()}
        if count > held:
            # 0, not NaN, for an unseen tensor (``seen`` says it is unset): inductor's index
            # propagation fails on a NaN constant feeding ``minimum``.
            state["gamma"] = torch.cat([state["gamma"], state["gamma"].new_zeros(count - held)])
            state["seen"] = torch.cat([state["seen"], state["seen"].new_zeros(count - held)])
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return {KIND: self.kind, **{key: value.clone() for key, value in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``gamma``; a state of another strategy or of mismatched shapes is refused.

        Raises:
            ValueError: not an AdaGC state, or ``gamma`` and ``seen`` of different lengths.
        """
        tensors = {"step": tensor_of((), INTEGER), "gamma": tensor_of((None,), FLOAT),
                   "seen": tensor_of((None,), BOOL)}
        entries = check_state(self, state_dict, {}, tensors)
        if entries and (set(entries) != set(tensors)
                        or entries["gamma"].shape != entries["seen"].shape):
            raise ValueError(f"{type(self).__name__}.load_state_dict: 'step', 'gamma' and 'seen' "
                             "come together, 'gamma' and 'seen' of one length")
        self.state = {key: value.clone() for key, value in entries.items()}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "lambda_abs": self.lambda_abs,
            "lambda_rel": self.lambda_rel,
            "warmup_steps": self.warmup_steps,
            "eps": self.eps,
            "nonfinite": self.nonfinite,
        }


def _global_norm(norms: Tensor, grads: list[Tensor], process_group: Any) -> Tensor:
    """``sqrt(sum_i ||g_i||^2)`` over the whole model, from the whole-tensor norms.

    The norms are already whole: a DTensor's over its mesh, an ordinary tensor's over
    ``process_group`` (it is a shard). DTensors with ``process_group`` are one pipeline stage's
    (the group joins the stages): their squares are summed over the group as well.
    """
    squares = norms.square()
    if process_group is None or not any_dtensor(grads):
        return squares.sum().sqrt()
    import torch.distributed as dist

    on_stage = torch.tensor([is_dtensor(g) for g in grads], device=norms.device)
    stage_part = torch.where(on_stage, squares, 0).sum()
    dist.all_reduce(stage_part, op=dist.ReduceOp.SUM, group=process_group)
    return (torch.where(on_stage, 0, squares).sum() + stage_part).sqrt()
