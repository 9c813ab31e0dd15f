"""README.md is assembled from docs/readme/*.md, and the Python examples of each section run.

The strategies section's snippets are run by tests/test_readme_strategies.py and the
application section's commands by tests/e2e/test_readme_application.py; this file runs the
Python blocks of every other section.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["core.md", "monitor.md", "performance.md", "distributed.md"]


def python_blocks(section: str) -> list[str]:
    text = (ROOT / "docs" / "readme" / section).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


BLOCKS = [(section, i, block) for section in SECTIONS for i, block in enumerate(python_blocks(section))]


def test_readme_is_assembled_from_the_sections():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_opens_with_the_two_quick_start_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text[text.index("## Quick start"):][:400]
    assert "make demo" in quick_start and "make test" in quick_start


def test_every_section_shows_at_least_one_python_example():
    assert {section for section, _, _ in BLOCKS} == set(SECTIONS)


@pytest.mark.parametrize("section,index,source", BLOCKS, ids=[f"{s}-{i}" for s, i, _ in BLOCKS])
def test_readme_python_example_runs(section, index, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(source, f"docs/readme/{section}#{index}", "exec"), {"__name__": "readme_example"})
