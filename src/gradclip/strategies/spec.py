"""Spec strings: one string picks a strategy and its hyper-parameters (``"zclip:alpha=0.9"``).

Grammar: ``name`` or ``name:args``, where ``args`` is a comma-separated list of
``keyword=value`` pairs, optionally led by one bare value that sets the strategy's first
parameter (``"norm:1.0"`` is ``"norm:max_norm=1.0"``). Keywords are the constructor's own;
values are parsed to what the constructor expects (``none`` is ``None``; booleans are
``true``/``false``; ``inf`` is a float). ``+`` chains strategies, applied in order
(``"agc:0.01+norm:1.0"`` is ``Chain(AGC(0.01), NormClip(1.0))``); a ``+`` inside a number
(``norm:1e+3``) stays the number's. The command line takes the same strings.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from gradclip.strategies.adagc import AdaGC
from gradclip.strategies.agc import AGC
from gradclip.strategies.autoclip import AutoClip
from gradclip.strategies.base import Clipper
from gradclip.strategies.chain import Chain
from gradclip.strategies.norm import NoClip, NormClip
from gradclip.strategies.spikeskip import SpikeSkip
from gradclip.strategies.value import ValueClip
from gradclip.strategies.zclip import ZClip


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_optional


def _integer(text: str) -> int:
    return int(text.strip())


def _number(text: str) -> float:
    return float(text.strip())


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _word(text: str) -> str:
    return text.strip()


# (class, {keyword: parser}); the first keyword takes a bare value.
StrategyEntry = tuple[type[Clipper], dict[str, Callable[[str], Any]]]
_ENTRIES: list[StrategyEntry] = [
    (NoClip, {"nonfinite": _optional(_word)}),
    (NormClip, {"max_norm": _number, "norm_type": _number}),
    (ValueClip, {"clip_value": _optional(_number), "min": _optional(_number),
                 "max": _optional(_number)}),
    (AGC, {"clipping": _number, "eps": _number}),
    (AutoClip, {"quantile": _number, "history_length": _optional(_integer)}),
    (ZClip, {
        "alpha": _number, "z_thresh": _number, "max_grad_norm": _optional(_number),
        "eps": _number, "warmup_steps": _integer, "mode": _word, "clip_option": _word,
        "clip_factor": _number, "skip_update_on_spike": _boolean,
    }),
    (AdaGC, {"beta": _number, "lambda_abs": _number, "lambda_rel": _number,
             "warmup_steps": _integer, "eps": _number}),
    (SpikeSkip, {"window": _integer, "sigma": _number}),
]
# name (the class's kind) -> entry
STRATEGIES: dict[str, StrategyEntry] = {cls.kind: (cls, parsers) for cls, parsers in _ENTRIES}
for _, _parsers in STRATEGIES.values():
    _parsers.setdefault("nonfinite", _optional(_word))
CHAIN = "+"


def from_spec(spec: str) -> Clipper:
    """The clipper a spec string names: ``from_spec("norm:1.0")`` is ``NormClip(max_norm=1.0)``.

    Args:
        spec: ``"name"``, ``"name:value"`` or ``"name:key=value,..."`` (a bare first value
            sets the first parameter), or several joined by ``+`` (a ``Chain``);
            ``describe_specs()`` lists them.

    Returns:
        A new clipper.

    Raises:
        ValueError: an unknown strategy or keyword, an unparsable or out-of-range value, or
            an empty string; the message lists every strategy and its parameters.
    """
    try:
        members = [cls(**kwargs) for cls, kwargs in map(_parse, _members(spec))]
        return members[0] if len(members) == 1 else Chain(*members)
    except (ValueError, TypeError) as error:
        raise ValueError(f"invalid clipping spec {spec!r}: {error}\n{describe_specs()}") from None


def _members(spec: str) -> list[str]:
    """The member specs of a chain: split at each ``+`` but an exponent's (``1e+3``)."""
    if not isinstance(spec, str):
        raise TypeError(f"a spec must be a string, got {type(spec).__name__}")
    members: list[str] = []
    for piece in spec.split(CHAIN):
        if members and members[-1].rstrip()[-1:] in ("e", "E") and piece[:1].isdigit():
            members[-1] += CHAIN + piece  # the + of an exponent: 1e+3
        else:
            members.append(piece)
    return members


def _parse(spec: str) -> tuple[type[Clipper], dict[str, Any]]:
    name, _, args = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}" if name else "empty spec")
    cls, parsers = STRATEGIES[name]
    kwargs: dict[str, Any] = {}
    items = [item for item in args.split(",") if item.strip()] if args.strip() else []
    for position, item in enumerate(items):
        keyword, equals, text = item.partition("=")
        if not equals:
            if position > 0:
                raise ValueError(f"only the first value may be given without a keyword, got {item!r}")
            keyword, text = next(iter(parsers)), item
        keyword = keyword.strip()
        if keyword not in parsers:
            raise ValueError(f"{name} has no parameter {keyword!r}")
        if keyword in kwargs:
            raise ValueError(f"{keyword!r} given twice")
        try:
            kwargs[keyword] = parsers[keyword](text)
        except ValueError:
            raise ValueError(f"cannot parse {keyword}={text.strip()!r}") from None
    return cls, kwargs


def describe_specs() -> str:
    """A few lines listing every strategy's spec, parameters and defaults (for ``--help``)."""
    lines = ["clipping strategies (a bare value sets the first parameter):"]
    for name, (cls, parsers) in STRATEGIES.items():
        signature = inspect.signature(cls.__init__).parameters
        parameters = []
        for keyword in parsers:
            if keyword == "nonfinite":
                continue
            default = signature[keyword].default
            shown = "required" if default is inspect.Parameter.empty else _format(default)
            parameters.append(f"{keyword}={shown}")
        lines.append(f"  {name:<9} {cls.__name__:<9} {', '.join(parameters)}")
    lines.append("  every strategy also takes nonfinite=error|skip|propagate (default propagate)")
    lines.append("  join specs with + to apply them in turn (a Chain): \"agc:0.01+norm:1.0\", "
                 "\"spikeskip+zclip\"")
    lines.append('  e.g. "norm:1.0", "value:min=-0.1,max=0.5", "zclip:alpha=0.97,z_thresh=2.5"')
    return "\n".join(lines)


def spec_string(clipper: Clipper) -> str:
    """The spec string that rebuilds ``clipper``: ``from_spec(spec_string(c))`` equals ``c``.

    Args:
        clipper: a strategy that ``from_spec`` can build.

    Returns:
        Its spec with every hyper-parameter (``nonfinite`` unless it is ``"propagate"``).

    Raises:
        ValueError: a clipper of a class no spec names.
    """
    if isinstance(clipper, Chain):
        return CHAIN.join(spec_string(member) for member in clipper.clippers)
    for name, (cls, _) in STRATEGIES.items():
        if type(clipper) is cls:
            values = dict(clipper.hyperparameters())
            if values.get("nonfinite") == "propagate":
                del values["nonfinite"]
            args = ",".join(f"{key}={_format(value)}" for key, value in values.items())
            return f"{name}:{args}" if args else name
    raise ValueError(f"{type(clipper).__name__} has no spec string")


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)
