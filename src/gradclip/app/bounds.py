"""The range of every number a run is built from: one table for the flags and ``config.json``.

A flag's ``type=`` (``gradclip.app.commands.options.bounded``) and the reading of a stored
``config.json`` (``RunConfig.from_dict`` and the task settings) check the same ``Bound``,
so a value the command line refuses is refused when a hand-edited folder holds it too. A new
setting adds one row to ``BOUNDS`` (the name is the ``config.json`` key; a flag that is not
stored, such as ``--jobs``, uses its own name).

The limits are generous, well beyond any useful run, and exist to turn a typo or a crafted
value (``threads=1000000``, ``hidden_size=10**30``) into one line instead of a crash.
Imports nothing heavy: the parser is built before torch is imported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from gradclip.app.choices import FLOAT32_MAX

CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Bound:
    """A closed (or half-open) range of integers or numbers.

    Args:
        kind: ``int`` (a JSON integer; ``true`` is not one) or ``float`` (any finite number).
        low: the smallest value allowed (excluded when ``low_open``).
        high: the largest value allowed (excluded when ``high_open``).
        why: words after the range in an error, e.g. ``" (float32's largest number)"``.
    """

    kind: type
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def describe(self) -> str:
        """The rule in words: ``an integer between 1 and 65,536``."""
        noun = "an integer" if self.kind is int else "a number"
        if self.low_open or self.high_open:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_shown(self.low)}, {_shown(self.high)}{right}{self.why}"
        return f"{noun} between {_shown(self.low)} and {_shown(self.high)}{self.why}"

    def admits(self, value: Any) -> bool:
        """``value`` is of the kind (a bool is neither) and within the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def error(self, value: Any) -> str:
        """``must be <rule>, got <value>`` for a refused ``value``."""
        return f"must be {self.describe()}, got {shown_value(value)}"


def _int(low: int, high: int, why: str = "") -> Bound:
    return Bound(int, low, high, why=why)


UNIT = Bound(float, 0.0, 1.0, high_open=True)  # dropout, momentum, fractions
EVERY = _int(0, 10**9)  # an interval in steps; 0: never

BOUNDS: dict[str, Bound] = {
    # model
    "hidden_size": _int(1, 2**16), "layers": _int(1, 256), "embed_dim": _int(1, 2**16),
    "dropout": UNIT, "heads": _int(0, 1024, " (0: a recurrent model)"),
    # training
    "lr": Bound(float, 0.0, FLOAT32_MAX, low_open=True, why=" (float32's largest number)"),
    "momentum": UNIT, "weight_decay": Bound(float, 0.0, 100.0),
    "total_steps": _int(1, 10**9), "warmup_steps": _int(0, 10**9),
    "min_lr_ratio": Bound(float, 0.0, 1.0), "epochs": Bound(float, 0.0, 10**6, low_open=True),
    "batch_size": _int(1, 2**24), "accumulate": _int(1, 10**4),
    "seed": _int(0, 2**63 - 1),
    "threads": _int(1, 4 * CPUS, f" (4 x the {CPUS} CPUs here)"),
    "log_every": EVERY, "eval_every": EVERY, "checkpoint_every": EVERY,
    "world_size": _int(1, 2**16),
    # tasks
    "seq_len": _int(1, 10**6), "max_len": _int(1, 10**6), "vocab_size": _int(100, 10**7),
    "val_fraction": UNIT, "validation_size": _int(1, 10**7),
    "ngram_buckets": _int(0, 2**24), "ngram_min_df": _int(1, 10**9), "spatial_dropout": UNIT,
    "wide_lr_scale": Bound(float, 0.0, 10**6, low_open=True),
    "wide_bias_lr_scale": Bound(float, 0.0, 10**6, low_open=True),
    "wide_eps": Bound(float, 0.0, 1.0, low_open=True), "deep_weight": Bound(float, 0.0, 10**3),
    # commands that run many trainings (not stored in a run's config.json)
    "seeds": _int(1, 1000), "jobs": _int(1, 1024), "workers": _int(1, 1024),
}


def check(name: str, value: Any) -> str | None:
    """The error words for ``value`` of setting ``name`` (``None``: admitted or unbounded)."""
    bound = BOUNDS.get(name)
    if bound is None or bound.admits(value):
        return None
    return bound.error(value)


def _shown(number: float) -> str:
    if number == 2**63 - 1:
        return "2**63 - 1"
    if isinstance(number, float) and number > 1e9:
        return f"{number:.4g}"
    return f"{number:,}" if isinstance(number, int) or number.is_integer() and number > 999 \
        else f"{number:g}"


def shown_value(value: Any) -> str:
    """A value as an error message quotes it: short, whatever it is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**40 else None
        return str(value) if digits is not None else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__,
                                                       type(value).__name__)
