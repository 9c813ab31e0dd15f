"""The strategy palette: one colour per spec in a figure, the family's own colour everywhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gradclip.app.experiments.palette import FAMILY_COLOURS, family, strategy_colours

NAMES = ["none", "norm", "value", "agc", "autoclip", "zclip", "adagc", "spikeskip", "mystery"]
member = st.builds(lambda name, value: name if value is None else f"{name}:{value:g}",
                   st.sampled_from(NAMES),
                   st.none() | st.floats(1e-3, 1e3, allow_nan=False))
spec = st.lists(member, min_size=1, max_size=3).map("+".join)


@given(st.lists(spec, min_size=1, max_size=40))
def test_no_two_specs_of_a_figure_share_a_colour(specs):
    colours = strategy_colours(specs)
    assert list(colours) == list(dict.fromkeys(specs))
    assert len(set(colours.values())) == len(colours)
    assert all(len(colour) == 7 and colour.startswith("#") for colour in colours.values())


@given(st.lists(spec, max_size=10), st.sampled_from(sorted(FAMILY_COLOURS)),
       st.floats(1e-3, 1e3, allow_nan=False))
def test_a_family_alone_in_its_figure_keeps_its_colour_whatever_else_is_drawn(others, name,
                                                                               value):
    mine = f"{name}:{value:g}"
    others = [other for other in others if family(other) != name]
    assert strategy_colours([*others, mine])[mine] == FAMILY_COLOURS[name]


def test_a_chain_keeps_its_colour_across_figures_that_share_its_companions():
    first = strategy_colours(["none", "spikeskip+norm:0.83", "norm:0.83"])
    second = strategy_colours(["norm:2.1", "spikeskip+norm:2.1", "none"])
    assert first["spikeskip+norm:0.83"] == second["spikeskip+norm:2.1"]


def test_thresholds_of_one_family_are_shades_darkest_for_the_tightest():
    colours = strategy_colours(["norm:2.0", "norm:0.5", "norm:1.0"])

    def lightness(colour):
        return sum(int(colour[i:i + 2], 16) for i in (1, 3, 5))

    assert lightness(colours["norm:0.5"]) < lightness(colours["norm:1.0"]) \
        < lightness(colours["norm:2.0"])


def test_family_drops_the_arguments_of_every_member():
    assert family("agc:0.01+norm:max_norm=1.0") == "agc+norm"
    assert family("norm:X") == "norm"
