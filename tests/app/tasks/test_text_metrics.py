"""Per-label ROC-AUC, accuracy and loss for the text task (scikit-learn only as the reference)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from gradclip.app.tasks.text.metrics import format_label_table, label_report, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_roc_auc_score_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    targets = (torch.rand(300, generator=generator) < 0.2).float()
    scores = torch.randint(0, 12, (300,), generator=generator).float() + targets  # many ties
    expected = sklearn_metrics.roc_auc_score(targets.numpy(), scores.numpy())
    assert roc_auc(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_matches_sklearn_on_continuous_scores():
    generator = torch.Generator().manual_seed(7)
    targets = (torch.rand(1000, generator=generator) < 0.05).float()
    scores = torch.randn(1000, generator=generator) + 1.5 * targets
    expected = sklearn_metrics.roc_auc_score(targets.numpy(), scores.numpy())
    assert roc_auc(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_is_none_when_a_class_is_absent():
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1.0, 1.0])) is None
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 0.0])) is None


def test_roc_auc_of_constant_scores_is_one_half():
    assert roc_auc(torch.zeros(6), torch.tensor([0.0, 1, 0, 1, 1, 0])) == 0.5


def test_label_report_leaves_single_class_labels_out_of_the_mean():
    logits = torch.tensor([[2.0, 1.0], [-1.0, 0.5], [0.5, -2.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    report = label_report(logits, targets, ("toxic", "threat"))
    assert report["per_label"]["threat"]["roc_auc"] is None
    assert report["mean_roc_auc"] == report["per_label"]["toxic"]["roc_auc"]
    assert report["labels_scored"] == 1


def test_label_report_counts_positives_and_accuracy_at_probability_one_half():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    targets = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    scores = label_report(logits, targets, ("toxic",))["per_label"]["toxic"]
    assert scores["positives"] == 2
    assert scores["accuracy"] == 0.5


def test_label_report_loss_is_mean_binary_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 3, generator=generator)
    targets = (torch.rand(20, 3, generator=generator) < 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits.double(), targets.double())
    assert label_report(logits, targets, ("a", "b", "c"))["loss"] == pytest.approx(float(expected))


def test_table_shows_every_label_and_n_a_for_undefined_roc_auc():
    report = label_report(torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                          torch.tensor([[1.0, 0.0], [0.0, 0.0]]), ("toxic", "threat"))
    lines = format_label_table(report).splitlines()
    assert [line.split()[0] for line in lines] == ["label", "toxic", "threat", "mean", "loss"]
    assert "n/a" in lines[2]
