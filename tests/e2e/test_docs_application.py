"""Every command the README's application section shows runs (with fewer steps) and says what
the README says it says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gradclip.app.cli import main

README = Path(__file__).parents[2] / "docs" / "application.md"
FEWER = {"--steps": "4"}


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def shown_commands() -> list[list[str]]:
    """Commands of the console blocks, then those quoted inline (the results table)."""
    console = [line[2:] for block in blocks("console")
               for line in block.splitlines() if line.startswith("$ gradclip ")]
    inline = re.findall(r"`(gradclip (?:train --task|demo)[^`]*)`", README.read_text())
    return [shlex.split(command) for command in console + inline]


def shortened(argv: list[str]) -> list[str]:
    """The command with fewer steps (the demo: 20 steps, one seed, in-process)."""
    argv = [FEWER.get(argv[i - 1], arg) if i else arg for i, arg in enumerate(argv)]
    if argv[1] == "demo":
        argv += ["--steps", "20", "--seeds", "1", "--workers", "1"]
    return argv[1:]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_readme_shows_the_demo_train_resume_and_help_commands():
    subcommands = [" ".join(argv[1:3]) for argv in shown_commands()]
    assert "demo" in subcommands and "train --resume" in subcommands
    assert "train --help" in subcommands


def test_every_console_command_of_the_readme_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    for argv in shown_commands():
        code, _, stderr = run(shortened(argv), capsys)
        assert code == 0, f"{shlex.join(argv)}: {stderr}"


def test_bad_input_examples_print_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (example,) = [block for block in blocks("text") if "$ gradclip" in block]
    commands = re.split(r"^\$ ", example, flags=re.MULTILINE)[1:]
    assert len(commands) >= 3
    for command in commands:
        line, *expected = command.strip().splitlines()
        code, _, stderr = run(shlex.split(line)[1:], capsys)
        assert code == 2 and stderr.strip().splitlines() == expected, line
