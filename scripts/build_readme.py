"""Assemble README.md from the sections in docs/readme/ (a test checks it is up to date).

    python scripts/build_readme.py          # rewrite README.md
    python scripts/build_readme.py --check  # exit 1 if README.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "intro.md",
    "core.md",
    "strategies.md",
    "huggingface.md",
    "application.md",
    "text.md",
    "benchmark.md",
    "monitor.md",
    "performance.md",
    "distributed.md",
    "development.md",
]


def assembled() -> str:
    """README.md's text: every section that exists, in order, separated by a blank line."""
    parts = [(ROOT / "docs" / "readme" / name) for name in SECTIONS]
    return "\n".join(part.read_text(encoding="utf-8").rstrip() + "\n" for part in parts if part.exists())


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = assembled()
    if "--check" in argv:
        if readme.read_text(encoding="utf-8") != text:
            print("README.md is stale: run python scripts/build_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
