"""One look for every figure: its size from its panel count, titles that fit, legends outside.

Every figure is drawn with matplotlib's constrained layout, which keeps the figure title, the
panel titles, the axis labels and a legend placed ``outside`` from overlapping. What it cannot
do is shorten a line wider than the figure, so titles are wrapped here to the width they have,
and legends go below the panels (``figure.legend(loc="outside lower center")``) in as many
columns as fit, never on top of the data.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradclip.app.training.rundir import write_bytes

PANEL_WIDTH = 5.2  # inches per panel
PANEL_HEIGHT = 3.6
MAX_COLUMNS = 4
# an average character of DejaVu Sans is about 0.55 of its size
CHARACTER_WIDTH = 0.56


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; a clear error if it is missing.

    Raises:
        ImportError: matplotlib is not installed (it comes with the ``app`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'gradclip[app]'") from None
    return plt


def save_figure(figure: Any, path: Path, dpi: int) -> None:
    """Write the PNG and close the figure; atomically and never through a link (rendered in
    memory, then ``write_bytes``).

    Raises:
        UserError: the file is a symbolic link, or the file system refused the write (one
            line naming the path).
    """
    try:
        image = io.BytesIO()
        figure.savefig(image, format="png", dpi=dpi)
        write_bytes(path, image.getvalue())
    finally:
        pyplot().close(figure)


def panel_figure(count: int, width: float = PANEL_WIDTH, height: float = PANEL_HEIGHT,
                 max_columns: int = MAX_COLUMNS) -> tuple[Any, list[Any]]:
    """A figure sized for ``count`` panels, at most ``max_columns`` to a row.

    Args:
        count: panels wanted (at least 1).
        width: inches per panel.
        height: inches per panel.
        max_columns: panels per row before a new row starts.

    Returns:
        ``(figure, axes)``: the axes as a flat list of ``count`` panels (spare cells hidden).
    """
    count = max(1, count)
    columns = min(max_columns, count)
    rows = math.ceil(count / columns)
    figure, grid = pyplot().subplots(rows, columns, figsize=(width * columns, height * rows),
                                     layout="constrained", squeeze=False)
    flat = [axis for line in grid for axis in line]
    for axis in flat[count:]:
        axis.set_axis_off()
    return figure, flat[:count]


def wrap(text: str, inches: float, fontsize: float) -> str:
    """``text`` broken into lines no wider than ``inches`` at ``fontsize`` points."""
    characters = max(12, int(inches * 72 / (fontsize * CHARACTER_WIDTH)))
    return "\n".join(textwrap.fill(line, characters) for line in text.split("\n"))


def figure_title(figure: Any, text: str, fontsize: float = 12) -> None:
    """The figure's title, wrapped to the figure's width."""
    figure.suptitle(wrap(text, figure.get_figwidth() - 0.3, fontsize), fontsize=fontsize)


def panel_title(axis: Any, text: str, fontsize: float = 10) -> None:
    """A panel's title, wrapped to the panel's width."""
    inches = axis.get_position().width * axis.figure.get_figwidth()
    axis.set_title(wrap(text, inches, fontsize), fontsize=fontsize)


def log_y(axis: Any) -> None:
    """A log y axis whose tick labels are plain numbers (``6``, ``0.02``, ``1e+06``), not
    ``6×10⁰``: a loss that stays within one decade is labelled on its minor ticks."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):  # which ticks get a label: LogFormatter's rule
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:g}"

    axis.set(yscale="log")
    axis.yaxis.set_major_formatter(PlainLogFormatter())
    axis.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False,
                                                     minor_thresholds=(1, 0.5)))


def axis_labels(axis: Any, xlabel: str, ylabel: str, fontsize: float = 10) -> None:
    """A panel's axis labels, each wrapped to the panel's width or height."""
    position = axis.get_position()
    figure = axis.figure
    axis.set_xlabel(wrap(xlabel, position.width * figure.get_figwidth(), fontsize),
                    fontsize=fontsize)
    axis.set_ylabel(wrap(ylabel, position.height * figure.get_figheight() * 0.8, fontsize),
                    fontsize=fontsize)


def legend_below(figure: Any, handles: Sequence[Any], title: str | None = None,
                 fontsize: float = 8) -> Any:
    """One legend for the whole figure, below its panels, in as many columns as fit.

    Args:
        figure: a figure with constrained layout.
        handles: the artists (or proxy ``Line2D``s) to list, each with its label.
        title: the legend's title.
        fontsize: the labels' size in points.

    Returns:
        The legend, or ``None`` when there is nothing to list.
    """
    if not handles:
        return None
    longest = max(len(str(handle.get_label())) for handle in handles)
    entry = longest * fontsize * CHARACTER_WIDTH / 72 + 0.9  # the line sample and padding
    fitting = max(1, min(len(handles), int((figure.get_figwidth() - 0.4) // entry)))
    columns = math.ceil(len(handles) / math.ceil(len(handles) / fitting))  # rows evenly filled
    return figure.legend(handles=handles, title=title, loc="outside lower center",
                         ncols=columns, fontsize=fontsize, title_fontsize=fontsize)


def line_handles(colours: dict[str, str], **style: Any) -> list[Any]:
    """Proxy lines, one per label in ``colours``, for a legend of strategies."""
    line = pyplot().Line2D
    return [line([], [], color=colour, label=label, **style) for label, colour in colours.items()]
