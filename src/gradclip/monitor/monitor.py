"""``GradientMonitor``: per-step gradient statistics for any model, reported every N steps.

Usage, between ``backward()`` and ``optimizer.step()``::

    monitor = gradclip.GradientMonitor(model, every=100)
    ...
    loss.backward()
    stats = clipper.clip_(model.parameters())     # optional
    report = monitor.step(stats)                  # None except every 100th step
    if report is not None:
        print(report)                             # summary, verdicts and fixes

Every step costs one ``torch._foreach_norm`` over the gradients and a few small kernels, all
on the device: nothing synchronises with the host until a report is read. What each step
keeps: the global norm (ring buffer of the last ``window`` steps, for spike detection), clip
and skip counts, and the first step and parameters where a gradient went NaN/Inf.

Called after clipping, the per-layer norms are those of the clipped gradient, while
``report.global_norm`` is the clipper's pre-clip norm (``stats.total_norm``); call it before
clipping, without stats, to see raw per-layer gradients.

The update-to-weight ratio compares the weights at a reporting step with a snapshot taken
at the previous ``step()`` call: it measures the optimizer update made between the two
(so call ``step()`` before ``optimizer.step()``). It is measured on the reporting steps that
are multiples of ``update_every`` (default: ``every``, but at least 10 steps apart; the
reports in between repeat the last measurement, with its step in ``update_ratio_step``).
A measurement costs a copy of the weights into one buffer allocated once (one
``torch._foreach_copy_``), the difference taken in place and two norm passes; on the LSTM
text model (10.4 MB of weights) that is ~2 ms, so measured every step it alone would be
~2.5% of a training step (``python -m benchmarks.monitor``).

What ``every=N`` costs per step: one ``torch._foreach_norm`` over the gradients and a few
small kernels on every step; on reporting steps, the report (device tensors, nothing read);
every ``profile_every``-th step, the time-profile hooks of that backward (one float64 norm
per time step of each recurrent layer's input); every ``update_every``-th step, the weight
snapshot. Both default to ``every``, but at least 10 steps apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gradclip.monitor.hidden import TimeProfiles
from gradclip.monitor.report import GradientReport
from gradclip.monitor.statistics import (
    combined_norm,
    module_norms,
    module_path,
    parameter_grad_norms,
    snapshot_weights_,
    update_ratios_,
)
from gradclip.monitor.verdicts import VerdictRules
from gradclip.parameters import ParamsLike, named_tensors
from gradclip.stats import ClipStats


def recurrent_cells(model: nn.Module | ParamsLike) -> dict[str, str]:
    """Each recurrent layer's cell by module path: torch's ``mode`` (``"LSTM"``, ``"GRU"``,
    ``"RNN_TANH"``, ``"RNN_RELU"``), so that the verdicts' fixes fit the model."""
    if not isinstance(model, nn.Module):
        return {}
    return {name or "(root)": module.mode for name, module in model.named_modules()
            if isinstance(module, nn.RNNBase)}


MIN_UPDATE_EVERY = 10  # steps between update-ratio measurements by default (a weight copy)


def slow_cadence(value: int | None, every: int, name: str) -> int:
    """Steps between the costly measurements: ``value``, or ``every`` rounded up to a
    multiple of it of at least ``MIN_UPDATE_EVERY``; a multiple of ``every`` either way."""
    if value is None:
        return every * -(-MIN_UPDATE_EVERY // every)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % every:
        raise ValueError(f"{name} must be a positive multiple of every ({every}), got {value!r}")
    return value


class GradientMonitor:
    """Watch gradient health: norms per parameter/module, update ratios, clipping, NaN/Inf.

    Args:
        model: an ``nn.Module`` (its recurrent layers are hooked for time profiles), or
            parameters as anything the clipping functions accept (no time profiles then).
        every: report on every ``every``-th call of ``step()``; other calls return ``None``.
        update_every: measure the update/weight ratio on the reporting steps that are
            multiples of this (``None``: ``every``, rounded up to a multiple of it of at
            least 10); it must be a multiple of ``every``.
        profile_every: record the time profiles on the reporting steps that are multiples of
            this (same default and rule), and on the first reporting step; the reports in
            between show the last ones.
        window: how many recent global norms the exploding-gradient rules look at.
        hidden_states: hook ``nn.RNN``/``nn.LSTM``/``nn.GRU`` layers to measure the gradient
            reaching each time step (every ``profile_every`` steps).
        rules: thresholds of the verdicts (``VerdictRules``).

    Raises:
        ValueError: ``every`` not a positive integer, ``update_every`` or ``profile_every``
            not a positive multiple of it, ``window`` below 2, or a model without trainable parameters.

    References:
        Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
        networks" (exploding and vanishing gradients, and the gradient reaching each time
        step).
    """

    def __init__(self, model: nn.Module | ParamsLike, every: int = 1, *, window: int = 200,
                 hidden_states: bool = True, rules: VerdictRules | None = None,
                 update_every: int | None = None, profile_every: int | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.update_every = slow_cadence(update_every, every, "update_every")
        self.profile_every = slow_cadence(profile_every, every, "profile_every")
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        named = (model.named_parameters() if isinstance(model, nn.Module)
                 else named_tensors(model))
        named = [(name, p) for name, p in named if p.requires_grad]
        if not named:
            raise ValueError("the model has no parameters that require a gradient")
        self.every, self.window = every, window
        self.rules = rules or VerdictRules()
        self.parameter_names = tuple(name for name, _ in named)
        self._parameters = [p for _, p in named]
        self.module_names = tuple(dict.fromkeys(module_path(n) for n in self.parameter_names))
        self._device = self._parameters[0].device
        self._module_index = torch.tensor(
            [self.module_names.index(module_path(n)) for n in self.parameter_names],
            device=self._device)
        self.profiles = TimeProfiles()
        self.profile_modules = (self.profiles.attach(model)
                                if hidden_states and isinstance(model, nn.Module) else [])
        self.cells = recurrent_cells(model)
        self.recurrent_layers = sum(m.num_layers for m in model.modules()
                                    if isinstance(m, nn.RNNBase)) or None \
            if isinstance(model, nn.Module) else None
        self._snapshot_buffer: list[Tensor] | None = None
        self._order_hooks = [p.register_post_accumulate_grad_hook(self._arrived(i))
                             for i, p in enumerate(self._parameters)]
        self.reset()

    def reset(self) -> None:
        """Forget all history (norms, counts, non-finite events, snapshot)."""
        zeros = torch.zeros((), device=self._device)
        self.steps = 0
        self._history = torch.full((self.window,), float("nan"), device=self._device)
        self._clipped = zeros.clone()
        self._skipped = zeros.clone()
        self._stats_steps = 0
        self._nonfinite_steps = zeros.clone()
        self._first_nonfinite_step = torch.full((), -1.0, device=self._device)
        self._first_nonfinite_mask = torch.zeros(len(self._parameters), dtype=torch.bool,
                                                 device=self._device)
        self._snapshot: list[Tensor] | None = None
        self._last_update: tuple[Tensor, Tensor, Tensor] | None = None
        self._arrival: dict[int, None] = {}
        self._last_arrival: tuple[int, ...] = ()
        self._last_report_step = 0
        self._latest: tuple[Tensor, Tensor, Tensor, ClipStats | None] | None = None
        self._last_profiles: dict[str, Tensor] = {}
        # the first report has its profiles too, then every profile_every steps
        self.profiles.recording = self._reports_at(1)

    def _arrived(self, index: int) -> Callable[[Tensor], None]:
        def hook(_parameter: Tensor) -> None:
            self._arrival.setdefault(index, None)
        return hook

    def _reports_at(self, step: int) -> bool:
        return step % self.every == 0

    def watch_hidden_states(self, states: Tensor | Sequence[Tensor], name: str = "hidden",
                            time_dim: int = 1) -> None:
        """Measure the gradient reaching each time step of ``states`` in this backward pass.

        Pass the per-step hidden states of your own time loop (a list of ``(B, H)`` tensors:
        their gradients are the full ``dL/dh_t``), or a ``(B, T, H)`` sequence tensor with
        its time dimension. Call it after the forward pass, before ``backward()``.
        """
        self.profiles.watch(name, states, time_dim)

    @torch.no_grad()
    def step(self, stats: ClipStats | None = None) -> GradientReport | None:
        """Record this step's gradients; on every ``every``-th call, return a report.

        Call after ``backward()`` (and after clipping, with its ``ClipStats``), before
        ``optimizer.step()``. Never synchronises with the host.

        Args:
            stats: the clipper's stats for this step, or ``None`` (raw gradients).

        Returns:
            A report on reporting steps, else ``None``.
        """
        self.steps += 1
        norms = parameter_grad_norms(self._parameters, self._device)
        measured = combined_norm(norms)
        global_norm = measured if stats is None else stats.total_norm.to(self._device)
        self._history[(self.steps - 1) % self.window] = global_norm
        self._record_nonfinite(norms, global_norm)
        if stats is not None:
            self._stats_steps += 1
            self._clipped += stats.clipped.to(self._device)
            self._skipped += stats.skipped.to(self._device)
        self._last_arrival = tuple(self._arrival) or self._last_arrival
        self._arrival = {}
        self._latest = (norms, measured, global_norm, stats)
        report = None
        if self._reports_at(self.steps):
            report = self._report(*self._latest)
        if (self.steps + 1) % self.update_every == 0:
            self._snapshot_buffer = snapshot_weights_(self._snapshot_buffer, self._parameters)
            self._snapshot = self._snapshot_buffer
        self.profiles.recording = (self.steps + 1) % self.profile_every == 0
        return report

    @torch.no_grad()
    def report(self) -> GradientReport | None:
        """A report on the latest ``step()`` now, whatever ``every`` says (``None`` before any).

        Use it at the end of a run, or when training stops on a NaN between reporting steps.
        Time profiles are those of the last reporting step; the update ratio is given only
        if a snapshot was due.
        """
        if self._latest is None:
            return None
        return self._report(*self._latest)

    def _record_nonfinite(self, norms: Tensor, global_norm: Tensor) -> None:
        bad = ~torch.isfinite(norms)
        bad_now = bad.any() | ~torch.isfinite(global_norm)
        first = bad_now & (self._first_nonfinite_step < 0)
        self._first_nonfinite_step = torch.where(
            first, torch.full_like(self._first_nonfinite_step, self.steps),
            self._first_nonfinite_step)
        self._first_nonfinite_mask = torch.where(first, bad, self._first_nonfinite_mask)
        self._nonfinite_steps += bad_now

    def _report(self, norms: Tensor, measured: Tensor, global_norm: Tensor,
                stats: ClipStats | None) -> GradientReport:
        recent = max(1, self.steps - self._last_report_step)
        self._last_report_step = self.steps
        count = min(self.steps, self.window)
        # oldest first: the ring buffer rolled so that the newest norm comes last
        history = self._history.roll(-(self.steps % self.window))[-count:]
        tensors = {
            "parameter_norms": norms, "global_norm": global_norm, "measured_norm": measured,
            "module_norms": module_norms(norms, self._module_index, len(self.module_names)),
            "history": history.clone(), "clipped_steps": self._clipped.clone(),
            "skipped_steps": self._skipped.clone(),
            "nonfinite_steps": self._nonfinite_steps.clone(),
            "first_nonfinite_step": self._first_nonfinite_step,
            "first_nonfinite_mask": self._first_nonfinite_mask,
        }
        if stats is not None and stats.threshold is not None:
            tensors["threshold"] = stats.threshold
        if self._snapshot is not None:
            self._last_update = (*update_ratios_(self._parameters, self._snapshot, self._device),
                                 torch.full((), float(self.steps), device=self._device))
            self._snapshot = None
        if self._last_update is not None:
            (tensors["update_ratios"], tensors["update_ratio"],
             tensors["update_ratio_step"]) = self._last_update
        # a report between reporting steps shows the time profiles of the last one
        profiles = self.profiles.collect() or self._last_profiles
        self._last_profiles = profiles
        tensors.update({f"profile:{name}": profile for name, profile in profiles.items()})
        return GradientReport(
            step=self.steps, parameter_names=self.parameter_names,
            module_names=self.module_names, tensors=tensors,
            profile_names=tuple(profiles), recent_steps=min(recent, count),
            stats_steps=self._stats_steps, arrival_order=self._last_arrival, rules=self.rules,
            cells=self.cells, recurrent_layers=self.recurrent_layers)

    def close(self) -> None:
        """Remove every hook the monitor placed on the model."""
        self.profiles.detach()
        for handle in self._order_hooks:
            handle.remove()
        self._order_hooks = []
