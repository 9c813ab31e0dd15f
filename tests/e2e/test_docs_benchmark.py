"""Every command of the README's benchmark section runs (fewer steps, a trimmed grid)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gradclip.app.experiments import benchmark
from tests.e2e.cli import run_cli

SECTION = Path(__file__).parents[2] / "docs" / "benchmark.md"


def commands() -> list[list[str]]:
    blocks = re.findall(r"```console\n(.*?)```", SECTION.read_text(), flags=re.DOTALL)
    return [shlex.split(line[2:]) for block in blocks for line in block.splitlines()
            if line.startswith("$ gradclip ")]


def test_the_section_shows_lm_training_and_both_published_suites():
    shown = [" ".join(argv[1:4]) for argv in commands()]
    assert "train --task lm" in shown
    assert "benchmark --suite smoke" in shown and "benchmark --suite quick" in shown


def shortened(argv: list[str], data: Path) -> list[str]:
    """Fewer steps; the suites trimmed to three strategies; the data file a small one."""
    replaced = {"--steps": "3", "--suite": "smoke", "--data": str(data)}
    return [replaced.get(argv[i - 1], arg) for i, arg in enumerate(argv) if i]


def test_every_command_of_the_section_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(benchmark, "FAMILIES", benchmark.FAMILIES[:2])  # none, norm
    tiny = benchmark.dataclasses.replace(benchmark.SUITES["smoke"], scale=0.005,
                                         transformer=(1, 32, 2, 20))
    monkeypatch.setitem(benchmark.SUITES, "smoke", tiny)
    (tmp_path / "story.txt").write_text("a small story about a cat and a mat. " * 60)
    data = tmp_path / "comments.csv"
    data.write_text("comment_text,toxic\n" + "".join(
        f"comment number {i} {'grr' * (i % 3 == 0)},{int(i % 3 == 0)}\n" for i in range(120)))
    for argv in commands():
        argv = shortened(argv, data)
        if argv[0] == "train":
            argv += ["--steps", "3"] if "--steps" not in argv else []
        code, _, stderr = run_cli(argv + (["--jobs", "1"] if argv[0] == "benchmark" else []),
                                  capsys)
        assert code == 0, f"{shlex.join(argv)}: {stderr}"
