"""A Markdown table (what ``report.md`` holds) as aligned text (what a terminal shows)."""

from __future__ import annotations


def cells(line: str) -> list[str]:
    """The cells of one ``| a | b |`` row, stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def aligned(markdown: str) -> str:
    """The table with its columns padded to one width each, a rule under the header.

    Columns marked ``---:`` in the Markdown are right-aligned (numbers), the others left.

    Args:
        markdown: a pipe table: a header row, the alignment row, then the data rows.

    Returns:
        The same rows as plain text, two spaces between columns.
    """
    header, rule, *body = markdown.strip().splitlines()
    rows = [cells(header), *(cells(line) for line in body)]
    right = [cell.endswith(":") for cell in cells(rule)]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(right))]

    def line(row: list[str]) -> str:
        padded = [cell.rjust(width) if align else cell.ljust(width)
                  for cell, width, align in zip(row, widths, right, strict=False)]
        return "  ".join(padded).rstrip()

    text = [line(rows[0]), "  ".join("-" * width for width in widths)]
    return "\n".join(text + [line(row) for row in rows[1:]])
