"""What the monitor saw at one reporting step: data fields, verdicts, and a readable summary.

The report holds device tensors and converts them to Python in one transfer, the first time
a field is read (or the report is printed), so creating a report never stalls training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradclip.monitor.fixes import RunSetting
from gradclip.monitor.summary import format_report
from gradclip.monitor.verdicts import (
    Verdict,
    VerdictRules,
    by_severity,
    depth_verdict,
    growth_verdict,
    nonfinite_verdict,
    spike_verdict,
    time_verdicts,
)


@dataclass(frozen=True)
class NonFiniteEvent:
    """Where NaN/Inf gradients first appeared: the step, and the parameters affected then,
    in the order their gradients were computed by backward (the first is the origin)."""

    step: int
    parameters: tuple[str, ...]


@dataclass(eq=False)
class GradientReport:
    """The monitor's findings at one step (``GradientMonitor.step()`` on a reporting step).

    Data fields (Python numbers, materialised on first read): ``global_norm`` (before
    clipping when ``ClipStats`` were passed), ``measured_norm`` (the gradient as the monitor
    saw it), ``threshold``, ``parameter_norms`` and ``module_norms`` (name -> L2 norm),
    ``update_ratio`` / ``update_ratios`` (the previous optimizer step's ``||dW|| / ||W||``),
    ``clip_fraction``, ``skipped_steps``, ``nonfinite_steps``, ``first_nonfinite``,
    ``time_profiles`` (recurrent layer -> gradient norm reaching each time step),
    ``norm_history`` (recent global norms), ``verdicts`` and ``verdict``.
    """

    step: int
    parameter_names: tuple[str, ...]
    module_names: tuple[str, ...]
    tensors: dict[str, Tensor] = field(repr=False)
    profile_names: tuple[str, ...] = ()
    recent_steps: int = 1
    stats_steps: int = 0
    arrival_order: tuple[int, ...] = ()
    rules: VerdictRules = field(default_factory=VerdictRules, repr=False)
    cells: dict[str, str] = field(default_factory=dict, repr=False)
    recurrent_layers: int | None = None

    @functools.cached_property
    def _values(self) -> dict[str, list[float]]:
        """Every tensor as a list of floats, fetched with a single device-to-host copy."""
        names = list(self.tensors)
        if not names:
            return {}
        device = self.tensors[names[0]].device
        flat = [self.tensors[n].detach().reshape(-1).to(device, torch.float64) for n in names]
        values = torch.cat(flat).cpu().tolist()
        out, start = {}, 0
        for name, part in zip(names, flat, strict=True):
            out[name] = values[start:start + part.numel()]
            start += part.numel()
        return out

    def _scalar(self, name: str) -> float | None:
        values = self._values.get(name)
        return values[0] if values else None

    def _always(self, name: str) -> float:
        # the monitor puts these in every report (GradientMonitor.step)
        return self._values[name][0]

    @property
    def global_norm(self) -> float:
        return self._always("global_norm")

    @property
    def measured_norm(self) -> float:
        return self._always("measured_norm")

    @property
    def threshold(self) -> float | None:
        return self._scalar("threshold")

    @property
    def parameter_norms(self) -> dict[str, float]:
        return dict(zip(self.parameter_names, self._values["parameter_norms"], strict=True))

    @property
    def module_norms(self) -> dict[str, float]:
        return dict(zip(self.module_names, self._values["module_norms"], strict=True))

    @property
    def update_ratio(self) -> float | None:
        return self._scalar("update_ratio")

    @property
    def update_ratio_step(self) -> int | None:
        """The step whose update ``update_ratio`` measured (``GradientMonitor.update_every``)."""
        step = self._scalar("update_ratio_step")
        return None if step is None else int(step)

    @property
    def update_ratios(self) -> dict[str, float] | None:
        ratios = self._values.get("update_ratios")
        return None if ratios is None else dict(zip(self.parameter_names, ratios, strict=True))

    @property
    def clip_fraction(self) -> float | None:
        """Share of steps (with ``ClipStats`` passed) on which the clipper changed a gradient."""
        if not self.stats_steps:
            return None
        return self._always("clipped_steps") / self.stats_steps

    @property
    def skipped_steps(self) -> int:
        return int(self._scalar("skipped_steps") or 0)

    @property
    def nonfinite_steps(self) -> int:
        return int(self._always("nonfinite_steps"))

    @property
    def first_nonfinite(self) -> NonFiniteEvent | None:
        step = int(self._always("first_nonfinite_step"))
        if step < 0:
            return None
        mask = self._values["first_nonfinite_mask"]
        order = list(self.arrival_order) + [i for i in range(len(mask))
                                            if i not in set(self.arrival_order)]
        names = tuple(self.parameter_names[i] for i in order if mask[i])
        return NonFiniteEvent(step, names)

    @property
    def time_profiles(self) -> dict[str, list[float]]:
        return {name: self._values[f"profile:{name}"] for name in self.profile_names}

    @property
    def norm_history(self) -> list[float]:
        return self._values["history"]

    @functools.cached_property
    def verdicts(self) -> list[Verdict]:
        """Every verdict that applies, most severe first (``[healthy]`` when none does)."""
        found = []
        event = self.first_nonfinite
        found.append(nonfinite_verdict(self.nonfinite_steps, event.step if event else None,
                                       event.parameters if event else ()))
        history, recent = self.norm_history, self.recent_steps
        found.append(spike_verdict(history[-recent:], history[:-recent], self.rules,
                                   self.clip_fraction))
        found.append(growth_verdict(history, self.rules, self.clip_fraction))
        found.extend(time_verdicts(self.time_profiles, self.rules, self.cells,
                                   self.recurrent_layers))
        cells = set(self.cells.values())
        setting = RunSetting(cell=cells.pop() if len(cells) == 1 else None,
                             layers=self.recurrent_layers)
        found.append(depth_verdict(self.module_norms, self.rules, setting))
        return by_severity([v for v in found if v is not None])

    @property
    def verdict(self) -> Verdict:
        """The most severe verdict."""
        return self.verdicts[0]

    def to_dict(self) -> dict[str, Any]:
        """The data fields as a JSON-ready dict (verdicts as ``{kind, explanation, fix}``)."""
        event = self.first_nonfinite
        return {
            "step": self.step, "global_norm": self.global_norm,
            "measured_norm": self.measured_norm, "threshold": self.threshold,
            "parameter_norms": self.parameter_norms, "module_norms": self.module_norms,
            "update_ratio": self.update_ratio, "update_ratios": self.update_ratios,
            "update_ratio_step": self.update_ratio_step,
            "clip_fraction": self.clip_fraction, "skipped_steps": self.skipped_steps,
            "nonfinite_steps": self.nonfinite_steps,
            "first_nonfinite": None if event is None else {"step": event.step,
                                                           "parameters": list(event.parameters)},
            "time_profiles": self.time_profiles,
            "verdicts": [{"kind": v.kind, "explanation": v.explanation, "fix": v.fix}
                         for v in self.verdicts],
        }

    def __str__(self) -> str:
        return format_report(self)
