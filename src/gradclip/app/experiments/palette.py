"""One colour per clipping strategy, the same in every figure (no matplotlib needed).

The rule, so that a reader learns a colour once:

- each strategy family has a fixed colour from Okabe & Ito's colour-blind-safe palette
  (``none`` black, ``norm`` blue, ``value`` orange, ``agc`` green, ...): ``norm:1.0`` is blue in
  ``compare``, ``benchmark``, ``demo`` and ``plot`` alike;
- several specs of one family in one figure (``norm:0.5`` and ``norm:2.0``) keep the family's
  hue in different shades, darkest for the smallest threshold (the tightest clipping);
- a family not in the table (a chain such as ``spikeskip+norm``) takes a colour from a spare
  list (Paul Tol's "muted"), starting at a place fixed by its name and
  skipping colours already taken in that figure; past that list, evenly spaced hues.

Colours are assigned to the whole set of specs a figure (or a command's figures) shows at
once, so no colour is used twice in a panel and a spec keeps its colour across the panels.

References:
    Okabe, M. & Ito, K. (2008). Color Universal Design: how to make figures and
    presentations that are friendly to colorblind people. https://jfly.uni-koeln.de/color/
    Tol, P. (2021). Colour schemes, SRON/EPS/TN/09-002. https://personal.sron.nl/~pault/
"""

from __future__ import annotations

import colorsys
import re
import zlib
from collections.abc import Iterable

# Okabe-Ito without its yellow (too pale on white), then two of Tol's "muted" colours, so that
# no two families share a hue (a family's shades stay apart from every other family).
FAMILY_COLOURS: dict[str, str] = {
    "none": "#000000",
    "norm": "#0072B2",
    "value": "#E69F00",
    "agc": "#009E73",
    "autoclip": "#CC79A7",
    "zclip": "#D55E00",
    "adagc": "#882255",
    "spikeskip": "#999933",
}
# More of Tol's "muted" scheme, for chains and new strategies (its cyan and Okabe-Ito's sky blue
# are left out: they read as light shades of ``norm``).
SPARE_COLOURS: tuple[str, ...] = ("#CC6677", "#332288", "#44AA99", "#AA4499", "#DDCC77", "#117733")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def family(spec: str) -> str:
    """The strategy names of a spec without their arguments: ``spikeskip+norm:1.0`` ->
    ``spikeskip+norm``; ``norm:X`` -> ``norm``."""
    return "+".join(member.partition(":")[0].strip() for member in spec.split("+"))


def strategy_colours(specs: Iterable[str]) -> dict[str, str]:
    """A distinct ``#rrggbb`` colour for each distinct spec, by the rule in the module doc.

    Args:
        specs: every spec the figure (or the command's figures) shows; repeats are ignored.

    Returns:
        ``{spec: colour}`` in first-seen order, with no colour used twice.
    """
    unique = list(dict.fromkeys(specs))
    families: dict[str, list[str]] = {}
    for spec in unique:
        families.setdefault(family(spec), []).append(spec)
    bases = _family_bases(list(families))
    colours: dict[str, str] = {}
    for name, members in families.items():
        for spec, colour in zip(sorted(members, key=_parameter_order),
                                _shades(bases[name], len(members)), strict=True):
            colours[spec] = colour
    return {spec: colours[spec] for spec in unique}


def _family_bases(names: list[str]) -> dict[str, str]:
    """The fixed colour of each known family; the others from the spares, then hues."""
    bases = {name: FAMILY_COLOURS[name] for name in names if name in FAMILY_COLOURS}
    taken = set(bases.values())
    extra_hues = 0
    for name in sorted(name for name in names if name not in FAMILY_COLOURS):
        start = zlib.crc32(name.encode()) % len(SPARE_COLOURS)
        free = [SPARE_COLOURS[(start + i) % len(SPARE_COLOURS)] for i in range(len(SPARE_COLOURS))
                if SPARE_COLOURS[(start + i) % len(SPARE_COLOURS)] not in taken]
        if free:
            bases[name] = free[0]
        else:  # more families than two palettes hold: golden-angle hues never repeat
            extra_hues += 1
            bases[name] = _hex(colorsys.hls_to_rgb((0.61803398875 * extra_hues) % 1, 0.45, 0.7))
        taken.add(bases[name])
    return bases


def _shades(base: str, count: int) -> list[str]:
    """``count`` shades of ``base``'s hue, dark to light (the base itself when ``count`` is 1)."""
    if count == 1:
        return [base]
    hue, _, saturation = colorsys.rgb_to_hls(*_rgb(base))
    return [_hex(colorsys.hls_to_rgb(hue, 0.2 + 0.45 * i / (count - 1), saturation))
            for i in range(count)]


def _parameter_order(spec: str) -> tuple:
    """Specs of one family sorted by their numbers (``norm:0.5`` before ``norm:2.0``)."""
    return tuple(float(n) for n in _NUMBER.findall(spec.partition(":")[2])), spec


def _rgb(colour: str) -> tuple[float, float, float]:
    red, green, blue = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return red, green, blue


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * min(1.0, max(0.0, c))):02X}" for c in rgb)
