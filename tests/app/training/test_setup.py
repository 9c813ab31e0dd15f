"""A run's parts from its settings: the clipper under the run's one non-finite policy."""

from __future__ import annotations

import pytest

from gradclip.app.errors import UserError
from gradclip.app.training.setup import clipper_from_spec


@pytest.mark.parametrize("spec", ["none", "norm:1.0", "value:0.5", "agc:0.01", "autoclip:0.1",
                                  "zclip"])
def test_nonfinite_flag_is_given_to_every_strategy(spec):
    clipper = clipper_from_spec(spec, "skip")
    assert clipper.nonfinite == "skip"
    assert type(clipper) is type(clipper_from_spec(spec))


def test_a_policy_in_the_spec_stands_when_the_flag_is_left_at_its_default():
    assert clipper_from_spec("norm:1.0,nonfinite=error").nonfinite == "error"
    assert clipper_from_spec("norm:1.0,nonfinite=error", "error").nonfinite == "error"


def test_two_different_policies_are_a_user_error():
    with pytest.raises(UserError, match="give the policy once"):
        clipper_from_spec("norm:1.0,nonfinite=error", "skip")


def test_a_bad_spec_is_one_line_naming_it():
    with pytest.raises(UserError, match=r"invalid clipping spec 'bogus:1'") as error:
        clipper_from_spec("bogus:1")
    assert "\n" not in str(error.value)
