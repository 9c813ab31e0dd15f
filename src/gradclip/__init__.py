"""gradclip: gradient clipping that keeps recurrent and large models stable.

The public API; see the README for one example per name. The names are imported on first
use (PEP 562): ``import gradclip`` itself does not import torch, so ``python -m gradclip
--help`` answers at once. ``from gradclip import NormClip`` and ``gradclip.NormClip`` work
as with eager imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from gradclip._version import __version__ as __version__

if TYPE_CHECKING:  # the same names, for type checkers and the API reference
    from gradclip.agc import adaptive_clip_grad_, unitwise_norm
    from gradclip.flat import FlatGradBuffer, flatten_grads_
    from gradclip.functional import (
        clip_grad_norm_,
        clip_grad_norm_per_tensor_,
        clip_grad_value_,
        clip_grads_with_norm_,
        get_total_norm,
    )
    from gradclip.monitor import GradientMonitor, GradientReport, Verdict, recommend_thresholds
    from gradclip.optim import ClippedOptimizer
    from gradclip.stats import ClipStats
    from gradclip.strategies import (
        AGC,
        AdaGC,
        AutoClip,
        Chain,
        Clipper,
        NoClip,
        NormClip,
        SpikeSkip,
        ValueClip,
        ZClip,
        from_spec,
    )

__all__ = [
    "AGC",
    "AdaGC",
    "AutoClip",
    "Chain",
    "ClipStats",
    "ClippedOptimizer",
    "Clipper",
    "NoClip",
    "NormClip",
    "SpikeSkip",
    "ValueClip",
    "ZClip",
    "from_spec",
    "GradientMonitor",
    "GradientReport",
    "Verdict",
    "recommend_thresholds",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_norm_per_tensor_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "unitwise_norm",
    "FlatGradBuffer",
    "flatten_grads_",
]

# public name -> the module that defines it (tests check this against the imports above)
_SOURCES = {
    "adaptive_clip_grad_": "gradclip.agc",
    "unitwise_norm": "gradclip.agc",
    "FlatGradBuffer": "gradclip.flat",
    "flatten_grads_": "gradclip.flat",
    "clip_grad_norm_": "gradclip.functional",
    "clip_grad_norm_per_tensor_": "gradclip.functional",
    "clip_grad_value_": "gradclip.functional",
    "clip_grads_with_norm_": "gradclip.functional",
    "get_total_norm": "gradclip.functional",
    "GradientMonitor": "gradclip.monitor",
    "GradientReport": "gradclip.monitor",
    "Verdict": "gradclip.monitor",
    "recommend_thresholds": "gradclip.monitor",
    "ClippedOptimizer": "gradclip.optim",
    "ClipStats": "gradclip.stats",
    **dict.fromkeys(
        ["AGC", "AdaGC", "AutoClip", "Chain", "Clipper", "NoClip", "NormClip", "SpikeSkip",
         "ValueClip", "ZClip", "from_spec"],
        "gradclip.strategies",
    ),
}


def __getattr__(name: str) -> Any:
    """A public name, imported on first use; or a submodule, as an eager import would offer.

    Raises:
        AttributeError: neither a public name nor a submodule of gradclip.
    """
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
        globals()[name] = value  # later lookups do not come back here
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
