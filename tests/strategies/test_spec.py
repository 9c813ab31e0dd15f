"""Spec strings: from_spec builds every strategy; bad specs raise a ValueError that lists them."""

from __future__ import annotations

import math

import pytest
import torch

import gradclip
from gradclip.strategies.spec import describe_specs, spec_string


@pytest.mark.parametrize(
    ("spec", "cls", "expected"),
    [
        ("none", gradclip.NoClip, {}),
        ("norm:1.0", gradclip.NormClip, {"max_norm": 1.0, "norm_type": 2.0}),
        ("norm:max_norm=1.0,norm_type=inf", gradclip.NormClip, {"norm_type": math.inf}),
        ("value:0.5", gradclip.ValueClip, {"clip_value": 0.5}),
        ("value:min=-0.1,max=0.5", gradclip.ValueClip, {"min": -0.1, "max": 0.5}),
        ("agc:0.01", gradclip.AGC, {"clipping": 0.01, "eps": 1e-3}),
        ("agc:clipping=0.02,eps=1e-4", gradclip.AGC, {"clipping": 0.02, "eps": 1e-4}),
        ("autoclip:0.1", gradclip.AutoClip, {"quantile": 0.1, "history_length": None}),
        ("autoclip:quantile=0.1,history_length=500", gradclip.AutoClip, {"history_length": 500}),
        ("zclip", gradclip.ZClip, {"alpha": 0.97, "z_thresh": 2.5, "max_grad_norm": 1.0,
                                   "warmup_steps": 25, "mode": "zscore"}),
        ("zclip:alpha=0.97,z_thresh=2.5", gradclip.ZClip, {"alpha": 0.97, "z_thresh": 2.5}),
        ("zclip:warmup_steps=5,mode=percentile", gradclip.ZClip,
         {"warmup_steps": 5, "mode": "percentile"}),
        ("zclip:max_grad_norm=none,skip_update_on_spike=true,clip_option=mean", gradclip.ZClip,
         {"max_grad_norm": None, "skip_update_on_spike": True, "clip_option": "mean"}),
        ("norm:1.0,nonfinite=skip", gradclip.NormClip, {"nonfinite": "skip"}),
        (" ZClip : clip_factor = 0.8 ", gradclip.ZClip, {"clip_factor": 0.8}),
    ],
)
def test_from_spec_builds_the_named_strategy_with_parsed_values(spec, cls, expected):
    clipper = gradclip.from_spec(spec)
    assert type(clipper) is cls
    values = clipper.hyperparameters()
    for key, value in expected.items():
        assert values[key] == value and type(values[key]) is type(value), key


@pytest.mark.parametrize(
    "spec",
    ["", "   ", "bogus", "bogus:1", "norm", "norm:-1", "norm:abc", "norm:1,2", "norm:1,max_norm=2",
     "zclip:alpha=2", "zclip:bogus=1", "zclip:warmup_steps=2.5", "zclip:skip_update_on_spike=maybe",
     "autoclip:quantile=1.5", "autoclip:history_length=0", "value:-1", "agc:0", "norm:1,nonfinite=x"],
)
def test_bad_spec_raises_value_error_listing_strategies_and_parameters(spec):
    with pytest.raises(ValueError) as error:
        gradclip.from_spec(spec)
    message = str(error.value)
    assert repr(spec) in message
    for name in ("norm", "value", "agc", "autoclip", "zclip", "none", "max_norm", "quantile", "z_thresh"):
        assert name in message


def test_bad_spec_message_says_what_was_wrong():
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\], got 2.0"):
        gradclip.from_spec("zclip:alpha=2")
    with pytest.raises(ValueError, match="zclip has no parameter 'bogus'"):
        gradclip.from_spec("zclip:bogus=1")
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        gradclip.from_spec("bogus")


@pytest.mark.parametrize(
    "spec",
    ["none", "norm:0.7,norm_type=inf", "value:0.5", "value:min=-0.1,max=0.5", "value:max=2",
     "agc:0.05", "autoclip:0.2,history_length=9", "autoclip:0.3",
     "zclip:max_grad_norm=none,mode=percentile,nonfinite=skip", "zclip:clip_factor=0.5"],
)
def test_spec_string_round_trips(spec):
    clipper = gradclip.from_spec(spec)
    rebuilt = gradclip.from_spec(spec_string(clipper))
    assert type(rebuilt) is type(clipper)
    assert rebuilt.hyperparameters() == clipper.hyperparameters()
    assert repr(rebuilt) == repr(clipper)


def test_describe_specs_lists_every_strategy_with_its_defaults():
    text = describe_specs()
    for line in ("norm", "value", "agc", "autoclip", "zclip", "none", "alpha=0.97", "quantile=0.1"):
        assert line in text
    assert len(text.splitlines()) < 15


def test_a_spec_built_clipper_clips():
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([3.0, 4.0])
    gradclip.from_spec("norm:1.0").clip_([param])
    torch.testing.assert_close(param.grad.norm(), torch.tensor(1.0))
