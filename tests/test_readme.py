"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(source, str(README), "exec"), {"__name__": "readme_example"})


def test_readme_opens_with_the_two_quick_start_commands():
    text = README.read_text(encoding="utf-8")
    quick_start = text[text.index("## Quick start"):][:600]
    assert "make demo" in quick_start and "make test" in quick_start
