"""``examples/pascanu2013.sh`` runs end to end (1 seed, a few steps) and writes its reports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "pascanu2013.sh"
GRADCLIP = Path(sys.executable).parent / "gradclip"


@pytest.mark.skipif(shutil.which("bash") is None or not GRADCLIP.exists(),
                    reason="needs bash and the installed gradclip command")
def test_pascanu2013_example_writes_a_report_per_grid(tmp_path):
    env = dict(os.environ, SEEDS="1", STEPS="6", JOBS="1", GRADCLIP=str(GRADCLIP))
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    settings = {"adding": 3 * 2 * 2, "temporal-order": 3 * 2, "gated": 2}
    for grid, rows in settings.items():
        report = (tmp_path / "out" / grid / "report.md").read_text()
        table = [line for line in report.splitlines() if line.startswith("| ")]
        assert len(table) == 1 + rows  # header + one row per setting
