"""`python -m benchmarks.meshes --quick` runs on 2 gloo processes and writes its figures."""

from __future__ import annotations

import json

from benchmarks import meshes


def test_quick_mesh_benchmark_times_both_norms_and_counts_one_all_reduce(tmp_path, capsys):
    path = tmp_path / "meshes.json"
    meshes.main(["--quick", "--json", str(path)])
    rows = json.loads(path.read_text())["meshes"]["rows"]
    assert [row["tensors"] for row in rows] == [20, 50]
    for row in rows:
        assert row["gradclip_s"] > 0 and row["torch_s"] > 0
        assert row["gradclip_collectives"] == 1
    assert "torch / gradclip" in capsys.readouterr().out
