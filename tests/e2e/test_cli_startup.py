"""`gradclip --help`, `--version` and argument errors answer before torch is imported.

Importing torch takes seconds (2.5 s warm, 18 s cold on the development machine); the console
script parses first, and a command module imports torch only where it runs. `python -m
gradclip` imports the package first: its names load lazily, so the same holds there.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gradclip import __version__
from gradclip.app.commands import COMMANDS

# Run the console script's main() and report, at exit, which heavy modules were imported.
PROBE = """
import atexit, sys
atexit.register(lambda: print("imported:", sorted(
    name for name in ("torch", "numpy", "matplotlib", "tokenizers") if name in sys.modules),
    file=sys.stderr))
sys.argv = ["gradclip", *sys.argv[1:]]
import gradclip_cli
raise SystemExit(gradclip_cli.main())
"""


# The same probe around `python -m gradclip` (runpy is what -m runs).
MODULE_PROBE = PROBE.replace("""import gradclip_cli
raise SystemExit(gradclip_cli.main())""", """import runpy
runpy.run_module("gradclip", run_name="__main__", alter_sys=True)""")


def console_script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=120)


def python_m_gradclip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MODULE_PROBE, *argv], capture_output=True,
                          text=True, timeout=120)


def imported(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_help_lists_every_command_without_importing_torch():
    result = console_script("--help")
    assert result.returncode == 0
    assert all(f"    {name}" in result.stdout for name in COMMANDS)
    assert imported(result) == "imported: []"


def test_version_names_gradclip_and_torch_without_importing_torch():
    result = console_script("--version")
    assert result.returncode == 0 and result.stdout.startswith(f"gradclip {__version__} (torch ")
    assert imported(result) == "imported: []"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_help_does_not_import_torch(command):
    result = console_script(command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: gradclip " + command)
    assert imported(result) == "imported: []"


@pytest.mark.parametrize("argv", [
    ["train", "--no-such-flag"],
    ["train", "--steps", "0"],
    ["train", "--task", "adding", "--data", "comments.csv"],
    ["compare", "--clip", "norm:1.0"],
    ["profile", "--model", "transformer"],
    ["bogus"],
], ids=lambda argv: " ".join(argv))
def test_an_argument_error_is_exit_2_without_importing_torch(argv):
    result = console_script(*argv)
    assert result.returncode == 2
    assert re.match(r"gradclip( \w+)?: error: ", result.stderr)
    assert imported(result) == "imported: []"


def test_the_summaries_of_the_help_are_the_commands_own(monkeypatch):
    import importlib

    class Recorder:
        def add_parser(self, name, **kwargs):
            self.name, self.help = name, kwargs["help"]
            from gradclip.app.cli import ArgumentParser
            return ArgumentParser(prog=name)

    for name, summary in COMMANDS.items():
        recorder = Recorder()
        importlib.import_module(f"gradclip.app.commands.{name}").register(recorder)
        assert (recorder.name, recorder.help) == (name, summary)


def test_an_ignored_task_flag_names_the_tasks_that_read_it():
    result = console_script("train", "--task", "adding", "--data", "comments.csv")
    assert result.stderr.splitlines()[0] == (
        "gradclip: error: --task adding ignores --data (only text, lm use it); remove it")


def test_python_m_gradclip_help_does_not_import_torch():
    result = python_m_gradclip("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: gradclip ")
    assert all(f"    {name}" in result.stdout for name in COMMANDS)
    assert imported(result) == "imported: []"


@pytest.mark.parametrize("argv", [["train", "--no-such-flag"], ["train", "--steps", "0"]],
                         ids=" ".join)
def test_python_m_gradclip_argument_error_is_exit_2_without_importing_torch(argv):
    result = python_m_gradclip(*argv)
    assert result.returncode == 2
    assert re.match(r"gradclip( \w+)?: error: ", result.stderr)
    assert imported(result) == "imported: []"


def test_python_m_gradclip_really_runs_as_a_module():
    # the probe's runpy call is what `python -m` does: check the real command agrees
    result = subprocess.run([sys.executable, "-m", "gradclip", "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"gradclip {__version__} (torch ")
