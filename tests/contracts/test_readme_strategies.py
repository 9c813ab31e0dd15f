"""The strategies README section (docs/readme/strategies.md): every Python snippet runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

SECTION = Path(__file__).resolve().parents[2] / "docs" / "readme" / "strategies.md"
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION.read_text(encoding="utf-8"), re.S)


def test_the_section_has_a_snippet_per_strategy_and_the_comparison_table():
    text = SECTION.read_text(encoding="utf-8")
    for name in ("NoClip", "NormClip", "ValueClip", "AGC", "AutoClip", "ZClip"):
        assert f"**`{name}(" in text, name
    assert "| threshold rule |" in text
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_strategies_readme_snippet_runs(source, tmp_path, monkeypatch, capsys):
    if "lightning" in source:
        pytest.importorskip("lightning.pytorch")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(source, str(SECTION), "exec"), {"__name__": "readme_example"})
