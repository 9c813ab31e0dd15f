"""Run a ``GradientMonitor`` inside the training loop without touching the loop.

``MonitoredClipper`` wraps the run's clipper: at each optimizer step the monitor reads the
raw gradient (before clipping), each report it returns is handed to a callback with the
raw gradients, then the wrapped clipper clips. The loop sees an ordinary ``Clipper``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from gradclip.monitor import GradientMonitor, GradientReport
from gradclip.parameters import ParamsLike
from gradclip.strategies.base import Clipper, ClipStats

OnReport = Callable[[GradientReport, list[Tensor]], None]


class MonitoredClipper(Clipper):
    """``clip_``: ``monitor.step()`` and the callback on the raw gradient, then the clip."""

    def __init__(self, clipper: Clipper, monitor: GradientMonitor, on_report: OnReport):
        self.clipper, self.monitor, self.on_report = clipper, monitor, on_report
        self.nonfinite = clipper.nonfinite

    def clip_(self, parameters: ParamsLike) -> ClipStats:
        parameters = list(parameters)
        report = self.monitor.step()
        grads = [p.grad for p in (item[1] if isinstance(item, tuple) else item
                                  for item in parameters) if p.grad is not None]
        if report is not None:
            self.on_report(report, grads)
        return self.clipper.clip_(parameters)

    def state_dict(self) -> dict[str, Any]:
        return self.clipper.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clipper.load_state_dict(state_dict)
