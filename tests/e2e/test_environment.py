"""Flags and the environment cannot make gradclip run unbounded, orphan workers, crash with a
traceback, or stop silently: a closed or full stdout, a full disk, a double Ctrl-C, a killed
``compare``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradclip.app.cpus import usable_cpus
from gradclip.app.experiments.workers import worker_count
from tests.e2e.cli import run_cli
from tests.e2e.test_trust import OLD_RUN, SMALL, assert_one_line, gradclip, wait_for

COMPARE_SMALL = SMALL[:SMALL.index("--progress")]
POSIX = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------------- stdout
def test_a_closed_stdout_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before the first line
    closed = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", tmp_path / "run"],
                              capsys)
    monkeypatch.undo()
    assert_one_line(code, stderr, "cannot write to standard output: Broken pipe")
    assert not (tmp_path / "run").exists()


def test_train_piped_to_head_never_stops_silently(tmp_path):
    process = gradclip("train", *SMALL, "--steps", "30", "--out", tmp_path / "run")
    assert process.stdout.read(5)
    process.stdout.close()  # as `| head -c 5` does
    _, stderr = process.communicate(timeout=240)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text()) if (
        tmp_path / "run" / "summary.json").exists() else {}
    trained = summary.get("status") == "completed" and summary.get("step") == 30
    stopped = process.returncode == 2 and "cannot write to standard output" in stderr
    assert trained or stopped, (process.returncode, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        process = subprocess.run(
            [sys.executable, "-m", "gradclip", "train", *SMALL, "--steps", "2", "--out",
             str(tmp_path / "run")], stdout=full, stderr=subprocess.PIPE, text=True,
            timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_one_line(process.returncode, process.stderr,
                    "cannot write to standard output: No space left on device")


@POSIX
@pytest.mark.parametrize("entry", [["-m", "gradclip"], ["-c", "import gradclip_cli; "
                                                          "raise SystemExit(gradclip_cli.main())"]])
def test_a_stdout_closed_at_start_is_one_line_and_leaves_no_folder(tmp_path, entry):
    """``gradclip ... >&-``: Python starts with ``sys.stdout`` set to None."""
    process = subprocess.run(
        [sys.executable, *entry, "train", *SMALL, "--steps", "2", "--out", str(tmp_path / "run")],
        stderr=subprocess.PIPE, text=True, timeout=240, preexec_fn=lambda: os.close(1),
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_one_line(process.returncode, process.stderr, "standard output is closed")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------- Ctrl-C
@POSIX
@pytest.mark.parametrize("when", ["start-up", "training"])
def test_a_double_ctrl_c_prints_exactly_one_line(tmp_path, when):
    run_dir = tmp_path / "run"
    console_script = [sys.executable, "-c", "import gradclip_cli, sys; sys.exit(gradclip_cli.main())"]
    process = subprocess.Popen([*console_script, "train", *SMALL, "--steps", "100000",
                                "--checkpoint-every", "0", "--out", str(run_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    if when == "training":
        wait_for(run_dir / "metrics.jsonl", process)
    else:
        time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr, stderr


# ----------------------------------------------------------------------- workers
def test_workers_are_capped_at_the_runs_and_the_cores():
    assert worker_count(100_000, 1) == 1
    assert worker_count(100_000, 10**6) == usable_cpus()
    assert worker_count(3, 2) == 2 and worker_count(1, 50) == 1


def test_compare_with_more_jobs_than_runs_starts_one_worker(tmp_path, capsys):
    code, stdout, stderr = run_cli(
        ["compare", *COMPARE_SMALL, "--steps", "3", "--clips", "norm:1.0", "--seeds", "1",
         "--jobs", "64", "--out", tmp_path / "out"], capsys)
    assert code == 0, stderr
    assert "1 runs of 3 steps, 1 at a time" in stdout


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] \
            == "Z"
    except OSError:
        return True


@POSIX
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.skipif(usable_cpus() < 2, reason="one CPU: compare trains in its own process")
def test_killing_compare_leaves_no_worker_behind(tmp_path):
    process = gradclip("compare", *COMPARE_SMALL, "--steps", "100000", "--clips", "none,norm:1.0",
                       "--seeds", "1", "--jobs", "2", "--out", tmp_path / "out")
    deadline = time.monotonic() + 240
    while len(workers := children(process.pid)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while not all(gone(worker) for worker in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.05)


# ----------------------------------------------------------------------- full disk
@pytest.mark.parametrize("failing", ["tokenizer.json", "training_rows.txt", "config.json"])
def test_a_full_disk_while_a_text_run_is_created_is_one_line_and_no_folder(
        tmp_path, capsys, monkeypatch, failing):
    data = tmp_path / "rows.csv"
    data.write_text("comment_text,toxic\n" + "".join(f"comment {i} here,{i % 2}\n"
                                                     for i in range(40)))
    replace = os.replace

    def full_for_one_file(source, target, *args, **kwargs):
        if Path(target).name == failing:
            no_space()
        return replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_for_one_file)
    code, _, stderr = run_cli(["train", "--task", "text", "--data", data, "--vocab-size", "100",
                               "--steps", "1", "--out", tmp_path / "run"], capsys)
    assert_one_line(code, stderr, f"{failing}: No space left on device")
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_taking_the_lock_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "ftruncate", no_space)
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", tmp_path / "run"],
                              capsys)
    assert_one_line(code, stderr, "cannot write the lock file")
    assert not (tmp_path / "run").exists()


def test_torch_text_of_a_failed_checkpoint_write_is_our_own_line(tmp_path, capsys,
                                                                  monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)

    def torch_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_fails)
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "the file system refused the write (is the disk full?)")
    assert "enforce fail" not in stderr and "inline_container" not in stderr


def test_summary_says_failed_after_a_disk_full_stop(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    monkeypatch.setattr(torch, "save", no_space)
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "No space left on device")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
