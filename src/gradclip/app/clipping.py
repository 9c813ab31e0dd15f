"""The clipping strategy of a run, from its spec string (``--clip norm:1.0``)."""

from __future__ import annotations

import gradclip
from gradclip.app.errors import UserError
from gradclip.strategies.base import Clipper


def clipper_from_spec(spec: str) -> Clipper:
    """``gradclip.from_spec(spec)``, with a bad spec turned into a one-line ``UserError``."""
    try:
        return gradclip.from_spec(spec)
    except (ValueError, TypeError) as error:
        # the library's message lists every strategy over several lines; keep its first line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if repr(spec) not in reason:
            reason = f"invalid clipping spec {spec!r}: {reason}"
        raise UserError(f"{reason} (e.g. none, norm:1.0, value:0.5, agc:0.01, autoclip:0.1, "
                        "zclip)") from None


def check_spec(spec: str) -> str:
    """Validate a spec up front (argparse ``type=``); returns it unchanged."""
    clipper_from_spec(spec)
    return spec
