"""``gradclip plot RUN_DIR`` end to end on a tiny training run."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from gradclip.app.cli import main  # noqa: E402

PLOTS = ("loss.png", "grad_norm.png", "layer_norms.png")


def test_plot_writes_the_three_figures_into_the_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--hidden-size", "8",
                 "--steps", "20", "--log-every", "5", "--progress", "never",
                 "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["plot", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    for name in PLOTS:
        assert (run_dir / name).stat().st_size > 0
        assert str(run_dir / name) in printed


def test_plot_of_a_missing_directory_is_one_error_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_plot_of_a_folder_without_metrics_is_one_error_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl is missing" in capsys.readouterr().err


def test_plot_of_corrupt_metrics_is_one_error_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    assert main(["plot", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err
