"""Every write stays inside the folder: no file the project writes is followed through a link.

Each writer is tested with its file replaced by a symbolic link to a user's file (the "victim"):
the command refuses in one line, and the victim is unchanged (or never created).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from gradclip.app.errors import UserError
from gradclip.app.training import checkpoint, rundir
from gradclip.app.training.loggers import MetricsLogger
from tests.e2e.cli import run_cli
from tests.e2e.test_trust import OLD_RUN, SMALL, assert_one_line

VICTIM_TEXT = "a user's own file\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def old_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    return run_dir


# ----------------------------------------------------------------------- every writer
def write_tokenizer(folder: Path) -> None:
    from gradclip.app.tasks.text.tokenizer import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer(["one two three", "two three four"] * 4, 16), folder)


def append_metrics(folder: Path) -> None:
    MetricsLogger(folder).start(0, 1)


WRITERS = {  # the file each writer writes, and a call that writes it into a folder
    "config.json": lambda folder: rundir.write_json(folder / "config.json", {"a": 1}),
    "summary.json": lambda folder: rundir.write_json(folder / "summary.json", {"a": 1}),
    "report.md": lambda folder: rundir.write_text(folder / "report.md", "text"),
    "loss.png": lambda folder: rundir.write_bytes(folder / "loss.png", b"\x89PNG"),
    "checkpoint.pt": lambda folder: checkpoint.save_checkpoint(folder, {"step": 1}),
    "best.pt": lambda folder: checkpoint.save_checkpoint(folder, {"step": 1}, "best.pt"),
    "metrics.jsonl": append_metrics,
    ".lock": rundir.RunLock,
    "tokenizer.json": write_tokenizer,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_writer_refuses_its_file_as_a_link_and_leaves_the_target_alone(tmp_path, name):
    folder = tmp_path / "folder"
    folder.mkdir()
    target = victim(tmp_path)
    (folder / name).symlink_to(target)
    with pytest.raises(UserError, match="is a symbolic link"):
        WRITERS[name](folder)
    assert target.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_writer_never_creates_the_target_of_a_dangling_link(tmp_path, name):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / name).symlink_to(tmp_path / "created-elsewhere")
    with pytest.raises(UserError, match="is a symbolic link"):
        WRITERS[name](folder)
    assert not (tmp_path / "created-elsewhere").exists()


def test_a_link_at_the_temporary_name_is_removed_not_followed(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    target = victim(tmp_path)
    (folder / f".config.json.{os.getpid()}.tmp").symlink_to(target)
    rundir.write_json(folder / "config.json", {"a": 1})
    assert target.read_text() == VICTIM_TEXT
    assert json.loads((folder / "config.json").read_text()) == {"a": 1}
    assert sorted(path.name for path in folder.iterdir()) == ["config.json"]


def test_a_lock_that_is_another_name_of_a_users_file_is_refused(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    target = victim(tmp_path)
    os.link(target, folder / ".lock")
    with pytest.raises(UserError, match="not a lock file of gradclip"):
        rundir.RunLock(folder)
    assert target.read_text() == VICTIM_TEXT


# ----------------------------------------------------------------------- train and resume
def test_train_out_refuses_a_folder_whose_lock_links_to_a_users_file(tmp_path, capsys):
    run_dir, target = tmp_path / "run", victim(tmp_path)
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(target)
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", run_dir], capsys)
    assert_one_line(code, stderr, "is not an empty folder")
    assert target.read_text() == VICTIM_TEXT
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock"]


def test_a_folder_holding_only_a_users_lock_file_is_not_empty(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(VICTIM_TEXT)
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", run_dir], capsys)
    assert_one_line(code, stderr, "is not an empty folder")
    assert (run_dir / ".lock").read_text() == VICTIM_TEXT


def test_a_folder_holding_only_a_lock_gradclip_left_is_empty(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("12345\n")
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", run_dir], capsys)
    assert code == 0, stderr
    assert (run_dir / "checkpoint.pt").is_file()


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "summary.json", "checkpoint.pt",
                                  "config.json"])
def test_resume_refuses_a_folder_with_a_link_and_writes_nothing_through_it(tmp_path, capsys,
                                                                           name):
    run_dir, target = old_run(tmp_path), victim(tmp_path)
    if name in ("checkpoint.pt", "config.json"):  # the link names a copy: readable, intact
        target.write_bytes((run_dir / name).read_bytes())
    before = target.read_bytes()
    (run_dir / name).unlink(missing_ok=True)
    (run_dir / name).symlink_to(target)
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, f"{run_dir / name} is a symbolic link")
    assert target.read_bytes() == before


def test_resume_never_creates_the_target_of_a_dangling_metrics_link(tmp_path, capsys):
    run_dir = old_run(tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "is a symbolic link")
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_resume_refuses_a_link_deeper_in_the_folder(tmp_path, capsys):
    run_dir = old_run(tmp_path)
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events").symlink_to(victim(tmp_path))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "tensorboard/events is a symbolic link")


# ----------------------------------------------------------------------- plot
@pytest.mark.parametrize("figure", ["loss.png", "grad_norm.png", "layer_norms.png"])
def test_plot_refuses_a_figure_that_is_a_link(tmp_path, capsys, figure):
    run_dir, target = old_run(tmp_path), victim(tmp_path)
    (run_dir / figure).symlink_to(target)
    code, _, stderr = run_cli(["plot", run_dir], capsys)
    assert_one_line(code, stderr, f"{figure} is a symbolic link")
    assert target.read_text() == VICTIM_TEXT
    written = [path for path in run_dir.glob("*.png") if not path.is_symlink()]
    assert not written  # refused before any figure is written


def test_plot_replaces_a_figure_of_its_own(tmp_path, capsys):
    run_dir = old_run(tmp_path)
    (run_dir / "loss.png").write_bytes(b"old")
    code, _, _ = run_cli(["plot", run_dir], capsys)
    assert code == 0
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------- benchmark and others
def test_benchmark_refuses_a_non_empty_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text(VICTIM_TEXT)
    code, _, stderr = run_cli(["benchmark", "--suite", "smoke", "--out", out], capsys)
    assert_one_line(code, stderr, f"--out {out} is not empty")
    assert ".gradclip-benchmark" in stderr
    assert sorted(path.name for path in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == VICTIM_TEXT


def test_benchmark_refuses_a_marker_that_is_a_link(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / ".gradclip-benchmark").symlink_to(victim(tmp_path))
    code, _, stderr = run_cli(["benchmark", "--suite", "smoke", "--out", out], capsys)
    assert_one_line(code, stderr, "is not empty")


def test_benchmark_resumes_its_own_folder_only_without_links(tmp_path, capsys):
    out = tmp_path / "bench"
    rundir.claim_output_folder(out, ".gradclip-benchmark")
    assert (out / ".gradclip-benchmark").is_file()
    (out / "profiles").symlink_to(tmp_path)  # a resume would empty what the link names
    code, _, stderr = run_cli(["benchmark", "--suite", "smoke", "--out", out], capsys)
    assert_one_line(code, stderr, "profiles is a symbolic link")
    assert (tmp_path / "bench").is_dir()


@pytest.mark.parametrize("command", ["compare", "demo", "benchmark"])
def test_out_naming_a_file_is_one_line(tmp_path, capsys, command):
    out = victim(tmp_path)
    code, _, stderr = run_cli([command, "--out", out], capsys)
    assert_one_line(code, stderr, f"--out {out} is a file, not a folder")
    assert out.read_text() == VICTIM_TEXT


def test_a_checkpoint_written_by_the_writer_loads(tmp_path):
    rundir.make_folder(tmp_path / "run")
    checkpoint.save_checkpoint(tmp_path / "run", {"model": {}, "optimizer": {}, "step": 1})
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1
