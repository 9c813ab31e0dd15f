"""``--clips``: comma-separated specs whose own commas (keywords, chains) stay inside them."""

from __future__ import annotations

import argparse

import pytest

from gradclip.app.commands.options import clip_list


@pytest.mark.parametrize(("text", "specs"), [
    ("none,norm:1.0", ["none", "norm:1.0"]),
    ("zclip:alpha=0.97,z_thresh=2.5,agc:0.01", ["zclip:alpha=0.97,z_thresh=2.5", "agc:0.01"]),
    ("none,spikeskip:window=32,sigma=3+norm:1.0,zclip",
     ["none", "spikeskip:window=32,sigma=3+norm:1.0", "zclip"]),
    ("norm:1.0+zclip:alpha=0.9,z_thresh=2", ["norm:1.0+zclip:alpha=0.9,z_thresh=2"]),
    ("agc:0.01+norm:1.0, adagc", ["agc:0.01+norm:1.0", "adagc"]),
])
def test_specs_split_at_the_commas_between_them(text, specs):
    assert clip_list(text) == specs


def test_a_bad_member_of_a_chain_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="window"):
        clip_list("none,spikeskip:window=3+norm:1.0")
