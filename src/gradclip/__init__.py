"""gradclip: gradient clipping that keeps recurrent and large models stable.

The public API; see the README for one example per name.
"""

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

__version__ = "0.1.0"

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
