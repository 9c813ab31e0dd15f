"""The Makefile targets the docs show exist, and the torch index is what the docs say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.parametrize("target", ["demo", "test", "lint", "docs", "docs-figures", "bench", "clean"])
def test_the_makefile_has_the_target(target):
    assert re.search(rf"^{re.escape(target)}:", MAKEFILE, re.M), target


def dry_run(*arguments: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # a fresh venv path, so that make plans every install step
    return subprocess.run(["make", "-n", "VENV=/nonexistent-venv", *arguments], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_make_demo_installs_the_cpu_torch_by_default():
    assert "--index-url https://download.pytorch.org/whl/cpu" in dry_run("demo")


def test_the_torch_index_can_be_overridden_or_dropped():
    assert "--index-url https://example.org/whl/cu126" in dry_run(
        "demo", "TORCH_INDEX=https://example.org/whl/cu126")
    assert "--index-url" not in dry_run("demo", "TORCH_INDEX=")
