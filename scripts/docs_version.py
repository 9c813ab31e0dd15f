"""The docs' version number, read from ``src/gradclip/_version.py`` (a mkdocs hook).

A page writes the marker ``<!-- gradclip-version -->`` where the version goes; the site shows
the number of the package it documents, written in one place only.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

VERSION_FILE = Path(__file__).resolve().parents[1] / "src" / "gradclip" / "_version.py"
MARKER = "<!-- gradclip-version -->"


def package_version(path: Path = VERSION_FILE) -> str:
    """The ``__version__ = "X.Y.Z"`` string of ``path``, read without importing the package."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise ValueError(f"{path} assigns no __version__ string")


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: every version marker replaced by the package's version."""
    return markdown.replace(MARKER, package_version())
