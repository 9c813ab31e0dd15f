"""The old ``clip_(parameters)`` signature still works, with a DeprecationWarning that the
project's own tests turn into an error (pyproject's filterwarnings): no test uses it unawares."""

from __future__ import annotations

import warnings

import pytest
import torch

import gradclip


def old_style_subclass():
    class OldNormClip(gradclip.NormClip):
        def clip_(self, parameters):
            return super().clip_(parameters)

    return OldNormClip


def test_a_subclass_without_loss_is_an_error_in_the_projects_tests():
    with pytest.raises(DeprecationWarning, match="takes no 'loss' argument"):
        old_style_subclass()


def test_a_subclass_without_loss_still_clips_when_the_warning_is_allowed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        clipper = old_style_subclass()(max_norm=1.0)
    weight = torch.nn.Parameter(torch.ones(4))
    weight.grad = torch.full((4,), 3.0)
    stats = clipper.clip_([weight], loss=torch.tensor(0.5))
    assert stats.total_norm.item() == pytest.approx(6.0)
    assert weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
