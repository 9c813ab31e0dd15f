"""The `gradclip ...` commands of README.md and of the docs pages without a runner of their own
run, with fewer steps, and succeed.

docs/application.md and docs/benchmark.md have their own runners (test_docs_application.py,
test_docs_benchmark.py), which also check what those pages say the commands print.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gradclip.app.experiments import benchmark
from tests.contracts.test_docs import DOCS, PAGES, ROOT, shown_commands
from tests.e2e.cli import run_cli

OWN_RUNNERS = {DOCS / "application.md", DOCS / "benchmark.md"}
RUN_HERE = [ROOT / "README.md", *(page for page in PAGES if page not in OWN_RUNNERS)]
PAGES_WITH_COMMANDS = [page for page in RUN_HERE
                       if any(c.startswith("gradclip ") for c in shown_commands(page))]
SHORTER = {"--steps": "3", "--seeds": "1", "--epochs": "0.05", "--suite": "smoke",
           "--hidden-size": "16", "--embed-dim": "16"}


def shortened(argv: list[str], data: Path) -> list[str]:
    """The command with fewer steps and seeds, a tiny data file, one job at a time."""
    argv = [{**SHORTER, "--data": str(data)}.get(argv[i - 1], arg)
            for i, arg in enumerate(argv) if i]
    if argv[0] == "demo":
        argv += ["--steps", "20", "--seeds", "1", "--workers", "1"]
    if argv[0] in ("compare", "benchmark"):
        argv += ["--jobs", "1"]
    if argv[0] in ("train", "profile", "compare") and "--steps" not in argv and "--epochs" not in argv:
        argv += ["--steps", "3"]
    return argv


def test_the_readme_shows_commands_that_are_run_here():
    assert ROOT / "README.md" in PAGES_WITH_COMMANDS


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=[p.name for p in PAGES_WITH_COMMANDS])
def test_every_gradclip_command_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(benchmark, "FAMILIES", benchmark.FAMILIES[:2])  # none, norm
    tiny = benchmark.dataclasses.replace(benchmark.SUITES["smoke"], scale=0.005,
                                         transformer=(1, 32, 2, 20))
    monkeypatch.setitem(benchmark.SUITES, "smoke", tiny)
    data = tmp_path / "comments.csv"
    data.write_text("comment_text,toxic\n" + "".join(
        f"comment number {i} {'grr' * (i % 3 == 0)},{int(i % 3 == 0)}\n" for i in range(120)))
    for command in shown_commands(page):
        if not command.startswith("gradclip "):
            continue
        argv = shortened(shlex.split(command), data)
        code, _, stderr = run_cli(argv, capsys)
        assert code == 0, f"{page.name}: {command}: {stderr}"
