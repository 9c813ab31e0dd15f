"""The install story of docs/getting-started.md holds: `python -m build` makes a wheel and an
sdist that pass `twine check`, and the wheel installs a working `gradclip` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gradclip._version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_license_is_an_spdx_expression():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


def test_each_integration_has_its_extra_and_names_it_when_missing():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^lightning = \["lightning>=2\.2"\]', pyproject, re.M)
    assert re.search(r'^transformers = \[', pyproject, re.M)
    assert '"gradclip[lightning]"' in pyproject  # make test installs it through dev
    source = (ROOT / "src" / "gradclip" / "integrations" / "lightning.py").read_text("utf-8")
    assert "pip install 'gradclip[lightning]'" in source


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
    assert [f.name for f in files] == [f"gradclip-{__version__}-py3-none-any.whl",
                                       f"gradclip-{__version__}.tar.gz"]
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_installed_wheel_runs_the_gradclip_command(dist, tmp_path):
    # --no-deps --target: the wheel's own files, with torch and the rest from this environment
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(dist / f"gradclip-{__version__}-py3-none-any.whl")],
                   check=True, capture_output=True, text=True)
    assert (target / "bin" / "gradclip").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", "import gradclip, gradclip_cli; print(gradclip.__file__); gradclip_cli.main()",
         "--version"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    location, version = result.stdout.splitlines()
    assert location.startswith(str(target)) and version.startswith(f"gradclip {__version__} (torch ")


def test_the_wheel_ships_the_py_typed_marker(dist):
    # PEP 561: without it, users' type checkers ignore every annotation of the package
    with zipfile.ZipFile(dist / f"gradclip-{__version__}-py3-none-any.whl") as wheel:
        names = wheel.namelist()
        assert "gradclip/py.typed" in names and "gradclip/_version.py" in names
        metadata = wheel.read(f"gradclip-{__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in metadata


def test_the_version_is_written_in_one_place():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert re.findall(r"^version = .*$", pyproject, re.M) == [
        'version = { attr = "gradclip._version.__version__" }']
    written = [path.relative_to(ROOT).as_posix() for path in (ROOT / "src").rglob("*.py")
               if re.search(r"^__version__ = ", path.read_text(encoding="utf-8"), re.M)]
    assert written == ["src/gradclip/_version.py"]
