"""Inputs that used to be accepted and silently wrong: each is now refused in one line, and a
refused start leaves no folder."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from gradclip.app.tasks.text.data import MAX_COMMENT_CHARS, read_comments, read_unlabelled
from gradclip.app.training.rundir import RunLock
from tests.e2e.cli import run_cli
from tests.e2e.test_trust import OLD_RUN, SMALL, assert_one_line, write_csv


def rows_csv(tmp_path, rows: int = 40):
    return write_csv(tmp_path / "rows.csv", ["comment_text", "toxic", "insult"],
                     [[f"comment number {i}", str(i % 2), "0"] for i in range(rows)])


@pytest.mark.parametrize("labels", [None, "toxic,insult"])
def test_a_text_column_that_is_a_label_is_refused(tmp_path, capsys, labels):
    argv = ["train", "--task", "text", "--data", rows_csv(tmp_path), "--text-column", "toxic",
            "--out", tmp_path / "run"]
    code, _, stderr = run_cli(argv + (["--labels", labels] if labels else []), capsys)
    assert_one_line(code, stderr, "--text-column toxic is a label column")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("spec", "named"), [
    ("norm:1e-46", "max_norm must be at least 1.18e-38"),
    ("norm:5e-324", "max_norm must be at least 1.18e-38"),
    ("zclip:max_grad_norm=1e-50", "max_grad_norm must be at least 1.18e-38"),
    ("agc:1e-45", "clipping must be at least 1.18e-38"),
    ("norm:1,norm_type=nan", "norm_type must be a number or 'inf', got nan"),
])
def test_a_threshold_that_would_zero_every_gradient_is_refused(tmp_path, capsys, spec, named):
    code, _, stderr = run_cli(["train", *SMALL, "--clip", spec, "--out", tmp_path / "run"],
                              capsys)
    assert_one_line(code, stderr, named)
    assert not (tmp_path / "run").exists()


def test_a_refused_tensorboard_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--tensorboard", "--out",
                               tmp_path / "tbx"], capsys)
    assert_one_line(code, stderr, "--tensorboard needs the tensorboard package")
    assert not (tmp_path / "tbx").exists()


def test_a_refused_start_in_an_empty_folder_leaves_it_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    (tmp_path / "tbx").mkdir()
    code, _, _ = run_cli(["train", *SMALL, "--steps", "2", "--tensorboard", "--out",
                          tmp_path / "tbx"], capsys)
    assert code == 2
    assert list((tmp_path / "tbx").iterdir()) == []


def test_a_held_folder_is_refused_naming_the_live_holder_and_its_pid(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    (run_dir / "checkpoint.pt").unlink()  # as a live run before its first checkpoint
    lock = RunLock(run_dir)
    try:
        new = run_cli(["train", *SMALL, "--out", run_dir], capsys)
        resumed = run_cli(["train", "--resume", run_dir], capsys)
    finally:
        lock.release()
    assert_one_line(new[0], new[2], f"is held by another gradclip process (pid {os.getpid()})")
    assert "stopped before its first checkpoint" not in new[2]
    assert_one_line(resumed[0], resumed[2],
                    f"in use by another gradclip process (pid {os.getpid()})")


def test_a_lock_naming_a_dead_process_gives_no_pid(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    lock = RunLock(run_dir)
    os.pwrite(lock.descriptor, b"999999999\n", 0)  # no such process
    try:
        code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    finally:
        lock.release()
    assert_one_line(code, stderr, "in use by another gradclip process;")


def test_a_long_comment_is_cut_before_tokenizing(tmp_path):
    long = "word " * (MAX_COMMENT_CHARS // 5 + 1000)
    data = write_csv(tmp_path / "rows.csv", ["comment_text", "toxic"],
                     [[long, "1"], ["short", "0"]])
    table = read_comments(data)
    _, texts = read_unlabelled(data)
    assert [len(text) for text in table.texts] == [MAX_COMMENT_CHARS, 5]
    assert [len(text) for text in texts] == [MAX_COMMENT_CHARS, 5]
