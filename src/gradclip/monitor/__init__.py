"""Gradient health: per-layer statistics, verdicts with fixes, and threshold recommendation.

``GradientMonitor`` watches a training run (see ``gradclip.monitor.monitor``);
``recommend_thresholds`` turns observed norms into ready-to-use clip specs.
"""

from gradclip.monitor.monitor import GradientMonitor
from gradclip.monitor.recommend import Recommendation, recommend_thresholds
from gradclip.monitor.report import GradientReport, NonFiniteEvent
from gradclip.monitor.verdicts import Verdict, VerdictRules

__all__ = [
    "GradientMonitor",
    "GradientReport",
    "NonFiniteEvent",
    "Recommendation",
    "Verdict",
    "VerdictRules",
    "recommend_thresholds",
]
