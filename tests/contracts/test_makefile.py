"""The Makefile targets the docs show exist, and the torch index is what the docs say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.parametrize("target", ["demo", "test", "lint", "typecheck", "docs", "docs-figures", "bench", "clean"])
def test_the_makefile_has_the_target(target):
    assert re.search(rf"^{re.escape(target)}:", MAKEFILE, re.M), target


def dry_run(*arguments: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # a fresh venv path, so that make plans every install step
    return subprocess.run(["make", "-n", "VENV=/nonexistent-venv", *arguments], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_make_demo_installs_the_pinned_torch_from_the_configured_index_by_default():
    # No other index by default: CI reaches only the configured one (a CPU build lies there).
    commands = dry_run("demo")
    assert "'torch==2.13.0'" in commands and "--index-url" not in commands


def test_the_torch_index_can_be_set_for_the_cpu_or_a_cuda_build():
    assert "--index-url https://download.pytorch.org/whl/cpu" in dry_run(
        "demo", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert "--index-url https://example.org/whl/cu126" in dry_run(
        "demo", "TORCH_INDEX=https://example.org/whl/cu126")


def test_make_test_runs_the_type_checker_over_the_package():
    commands = dry_run("test")
    assert "/nonexistent-venv/bin/mypy" in commands
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^files = \["src/gradclip", "src/gradclip_cli.py"\]$', pyproject, re.M)
    assert re.search(r"^strict = true$", pyproject, re.M)
