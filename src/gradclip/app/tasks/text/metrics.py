"""Scores for multi-label classification: per-label ROC-AUC, accuracy and positives, and BCE loss.

ROC-AUC is computed in torch from ranks (no scikit-learn at run time); a label whose split has
only one class has no ROC-AUC (``None``) and is left out of the mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values`` in ascending order, ties given the mean of their ranks."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True,
                                      return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    starts = ends - counts
    return ((starts + 1 + ends) / 2)[inverse]


def roc_auc(scores: Tensor, targets: Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` for 0/1 ``targets``; ``None`` if one class is absent.

    Rule (Mann-Whitney U): ``AUC = (R_pos - P (P + 1) / 2) / (P N)``, where ``R_pos`` is the sum
    of the positives' ranks among all scores (ties share their average rank), ``P`` and ``N``
    the numbers of positives and negatives. It equals the probability that a random positive
    scores above a random negative, ties counting one half.

    References:
        Hanley & McNeil (1982), "The meaning and use of the area under a receiver operating
        characteristic (ROC) curve", Radiology 143(1).
    """
    scores = scores.detach().reshape(-1).to(torch.float64).cpu()
    positive = targets.detach().reshape(-1).cpu() > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0 or not bool(torch.isfinite(scores).all()):
        return None
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def label_report(logits: Tensor, targets: Tensor, label_names: tuple[str, ...] | list[str]
                 ) -> dict[str, Any]:
    """Scores of ``(rows, labels)`` logits against 0/1 targets, as a JSON-ready dict.

    Keys: ``loss`` (mean binary cross-entropy over rows and labels), ``accuracy`` (share of
    (row, label) pairs right at probability 0.5), ``mean_roc_auc`` (mean over labels with both
    classes present, ``None`` if there is none), ``labels_scored`` (how many entered the mean)
    and ``per_label``: label -> ``{"roc_auc", "accuracy", "positives"}``.
    """
    logits = logits.detach().to(torch.float64).cpu()
    targets = targets.detach().to(torch.float64).cpu()
    correct = (logits >= 0) == (targets > 0.5)
    per_label = {}
    for column, name in enumerate(label_names):
        per_label[name] = {
            "roc_auc": roc_auc(logits[:, column], targets[:, column]),
            "accuracy": float(correct[:, column].double().mean()),
            "positives": int(targets[:, column].sum()),
        }
    aucs = [scores["roc_auc"] for scores in per_label.values() if scores["roc_auc"] is not None]
    return {
        "loss": float(F.binary_cross_entropy_with_logits(logits, targets)),
        "accuracy": float(correct.double().mean()),
        "mean_roc_auc": sum(aucs) / len(aucs) if aucs else None,
        "labels_scored": len(aucs),
        "per_label": per_label,
    }


def format_label_table(report: dict[str, Any]) -> str:
    """The per-label scores of a ``label_report`` as an aligned text table, mean last."""
    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = [("label", "positives", "roc_auc", "accuracy")]
    for name, scores in report["per_label"].items():
        rows.append((name, str(scores["positives"]), shown(scores["roc_auc"]),
                     shown(scores["accuracy"])))
    rows.append(("mean", "", shown(report["mean_roc_auc"]), shown(report["accuracy"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{width}}" for cell, width
                                                     in zip(row[1:], widths[1:], strict=True))
             for row in rows]
    lines.append(f"loss {report['loss']:.4f}")
    return "\n".join(lines)
