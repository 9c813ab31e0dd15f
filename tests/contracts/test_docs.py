"""The docs pages (docs/**/*.md) and README.md: every Python block runs, every shown command is run by a test.

Python blocks run here, each in a fresh namespace in an empty folder. The `$ gradclip ...`
commands of the console blocks run, with fewer steps, in tests/e2e/test_docs_commands.py;
every other command a page shows is listed in ``COMMANDS_RUN_ELSEWHERE`` with the test (or
Makefile target) that runs it, so a new, untested command fails here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
DOCUMENTS = [ROOT / "README.md", *PAGES]  # README.md is held to the pages' rules
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Block kinds a page may use: code that runs, or output/data that is shown.
RUN_KINDS = {"python", "console", "bash"}
SHOWN_KINDS = {"text", "json"}

# command prefix -> what runs it
COMMANDS_RUN_ELSEWHERE = {
    "make demo": "the Makefile target (tests/contracts/test_makefile.py checks it exists)",
    "make test": "the Makefile target",
    "make bench": "the Makefile target",
    "make docs": "the Makefile target",
    "make docs-figures": "the Makefile target",
    "pip install": "tests/contracts/test_packaging.py installs the built wheel",
    "python -m build": "tests/contracts/test_packaging.py",
    "python -m benchmarks.clip": "tests/contracts/test_benchmarks_smoke.py",
    "examples/pascanu2013.sh": "tests/e2e/test_compare_pascanu_example.py",
    "torchrun --nproc_per_node 2 -m gradclip train": "tests/distributed (the same commands, 2 gloo processes)",
}


def fenced_blocks(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


def shown_commands(page: Path) -> list[str]:
    """Every command of the page's console and bash blocks, continuation lines joined."""
    commands = []
    for kind, body in fenced_blocks(page):
        if kind not in ("console", "bash"):
            continue
        body = body.replace("\\\n", " ")
        for line in body.splitlines():
            line = line.strip()
            if kind == "console":
                if not line.startswith("$ "):
                    continue  # output shown under a command
                line = line[2:]
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+#.*$", "", line).strip())
    return commands


PYTHON = [(page, i, source) for page in DOCUMENTS
          for i, source in enumerate(s for kind, s in fenced_blocks(page) if kind == "python")]


def test_every_fenced_block_is_code_that_runs_or_shown_output():
    kinds = {(page.relative_to(ROOT).as_posix(), kind) for page in DOCUMENTS
             for kind, _ in fenced_blocks(page)}
    unknown = {(page, kind) for page, kind in kinds if kind not in RUN_KINDS | SHOWN_KINDS}
    assert not unknown, f"blocks neither run nor declared output: {sorted(unknown)}"


def test_every_shown_command_is_run_by_a_test():
    untested = [(page.name, command) for page in DOCUMENTS for command in shown_commands(page)
                if not command.startswith("gradclip ")
                and not any(command.startswith(prefix) for prefix in COMMANDS_RUN_ELSEWHERE)]
    assert not untested, untested


def test_the_strategies_page_has_a_snippet_per_strategy_and_the_comparison_table():
    text = (DOCS / "strategies.md").read_text(encoding="utf-8")
    for name in ("NoClip", "NormClip", "ValueClip", "AGC", "AutoClip", "ZClip"):
        assert f"**`{name}(" in text, name
    assert "| threshold rule |" in text


@pytest.mark.parametrize("page,index,source", PYTHON,
                         ids=[f"{page.relative_to(ROOT)}-{i}" for page, i, _ in PYTHON])
def test_docs_python_block_runs(page, index, source, tmp_path, monkeypatch):
    if "lightning" in source:
        pytest.importorskip("lightning.pytorch")
    if "transformers" in source:
        pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(source, f"{page.relative_to(ROOT)}#{index}", "exec"), {"__name__": "docs_example"})
