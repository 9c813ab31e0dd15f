"""README.md is short, hand-written, and says only what runs.

Its Python blocks run and its commands are checked in tests/contracts/test_docs.py; its
`gradclip` commands run in tests/e2e/test_docs_commands.py.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 300


def test_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= MAX_LINES


def test_readme_opens_with_the_demo_figure_and_the_two_quick_start_commands():
    assert "](docs/demo.png)" in README[:README.index("## Quick start")]
    quick_start = README[README.index("## Quick start"):][:400]
    assert "make demo" in quick_start and "make test" in quick_start


def test_readme_installs_only_what_works():
    assert "pip install gradclip" not in README  # not published
    assert "pip install ." in README and "python -m build" in README


def test_readme_shows_the_three_snippets():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 3
    assert "clip_grad_norm_" in blocks[0]
    assert "ClippedOptimizer" in blocks[1]
    assert "GradientMonitor" in blocks[2]


def test_readme_shows_the_cli_in_five_lines():
    (console,) = [block for block in re.findall(r"```console\n(.*?)```", README, re.S)
                  if "$ gradclip" in block]
    assert len(console.strip().splitlines()) == 5


def test_readme_links_point_at_files_and_headings_that_exist():
    for target in re.findall(r"\]\(((?!https?:)[^)]+)\)", README):
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.*)$", (ROOT / path).read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(heading) for heading in headings}, target


def slug(heading: str) -> str:
    """The anchor Markdown renderers (GitHub, mkdocs' toc) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower()).strip()
    return re.sub(r"[ ]+", "-", text)
