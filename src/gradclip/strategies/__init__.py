"""Stateful clipping strategies behind one protocol: ``clip_(parameters, loss=None) -> ClipStats``."""

from gradclip.stats import ClipStats
from gradclip.strategies.adagc import AdaGC
from gradclip.strategies.agc import AGC
from gradclip.strategies.autoclip import AutoClip
from gradclip.strategies.base import Clipper
from gradclip.strategies.chain import Chain
from gradclip.strategies.norm import NoClip, NormClip
from gradclip.strategies.spec import describe_specs, from_spec, spec_string
from gradclip.strategies.spikeskip import SpikeSkip
from gradclip.strategies.value import ValueClip
from gradclip.strategies.zclip import ZClip

__all__ = [
    "AGC",
    "AdaGC",
    "AutoClip",
    "Chain",
    "ClipStats",
    "Clipper",
    "NoClip",
    "NormClip",
    "SpikeSkip",
    "ValueClip",
    "ZClip",
    "describe_specs",
    "from_spec",
    "spec_string",
]
