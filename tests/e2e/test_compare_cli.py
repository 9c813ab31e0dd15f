"""``gradclip compare`` end to end: a tiny grid, its runs, report.md and figures."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from gradclip.app.cli import main  # noqa: E402

TINY = ["--task", "adding", "--hidden-size", "8", "--batch-size", "16", "--steps", "20",
        "--log-every", "5", "--jobs", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    code = main(["compare", *TINY, "--clips", "none,norm:1.0,zclip:alpha=0.9,z_thresh=2.0",
                 "--seeds", "2", "--seq-lens", "5,8", "--out", str(out)])
    return code, out


def test_compare_trains_every_clip_length_and_seed_as_its_own_run(compared):
    code, out = compared
    assert code == 0
    runs = sorted(path.name for path in (out / "runs").iterdir())
    assert len(runs) == 3 * 2 * 2
    assert all((out / "runs" / name / "summary.json").exists() for name in runs)


def test_compare_report_has_one_table_row_per_setting(compared):
    _, out = compared
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| T=")]
    assert len(rows) == 3 * 2
    assert any("zclip:alpha=0.9,z_thresh=2.0" in row for row in rows)
    assert "success" in report and "diverged" in report and "clip rate" in report


def test_compare_writes_the_figures_linked_from_the_report(compared):
    _, out = compared
    report = (out / "report.md").read_text()
    for name in ("losses.png", "grad_norms.png", "layer_norms.png", "success.png"):
        assert (out / name).stat().st_size > 0
        assert f"({name})" in report


def test_compare_results_count_seeds_per_setting(compared):
    _, out = compared
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 6
    assert all(result["seeds"] == 2 for result in results)


def test_compare_rejects_an_unknown_clip_spec_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *TINY, "--clips", "none,bogus:1", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_compare_refuses_a_non_empty_output_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["compare", *TINY, "--clips", "none", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_compare_report_names_only_the_settings_that_apply(compared):
    _, out = compared
    first = (out / "report.md").read_text().splitlines()[2]
    assert "sequence lengths 5, 8" in first and "20 steps" in first and "None" not in first


def test_the_report_of_a_text_grid_by_epochs_says_none_of_none():
    from argparse import Namespace

    from gradclip.app.commands.compare import grid_description

    args = Namespace(task="text", models=["gru"], seq_lens=[None], lrs=[0.003],
                     optimizer="adamw", momentum=0.9, batch_size=64, hidden_size=128,
                     steps=None, epochs=6.0, seed=0, seeds=2)
    text = grid_description(args)
    assert "None" not in text and "sequence lengths" not in text and "momentum" not in text
    assert "6 epochs" in text and "seeds 0..1" in text
