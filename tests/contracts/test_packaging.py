"""The install story of docs/getting-started.md holds: `python -m build` makes a wheel and an
sdist that pass `twine check`, and the wheel installs a working `gradclip` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_license_is_an_spdx_expression():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return out


def test_build_makes_a_wheel_and_an_sdist_that_pass_twine_check(dist):
    pytest.importorskip("twine")
    files = sorted(dist.iterdir())
    assert [f.name for f in files] == ["gradclip-0.1.0-py3-none-any.whl", "gradclip-0.1.0.tar.gz"]
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_installed_wheel_runs_the_gradclip_command(dist, tmp_path):
    # --no-deps --target: the wheel's own files, with torch and the rest from this environment
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(dist / "gradclip-0.1.0-py3-none-any.whl")],
                   check=True, capture_output=True, text=True)
    assert (target / "bin" / "gradclip").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", "import gradclip, gradclip_cli; print(gradclip.__file__); gradclip_cli.main()",
         "--version"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    location, version = result.stdout.splitlines()
    assert location.startswith(str(target)) and version.startswith("gradclip 0.1.0 (torch ")
