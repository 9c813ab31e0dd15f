"""Trust: a run folder never executes code, every mistake is one line, nothing is corrupted.

Each case of the adversarial pass is a test: the exit code, one stderr line, no traceback,
and no run folder left behind where the command refused.
"""

from __future__ import annotations

import csv
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

from gradclip.app.training.parallel import shard_folder
from tests.e2e.cli import run_cli

SMALL = ["--task", "adding", "--seq-len", "6", "--hidden-size", "8", "--batch-size", "8",
         "--device", "cpu", "--progress", "never"]
OLD_RUN = Path(__file__).parents[1] / "app" / "training" / "fixtures" / "run-written-by-0.1.0"


def assert_one_line(code, stderr, expected, exit_code=2):
    lines = stderr.strip().splitlines()
    assert code == exit_code, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert expected in lines[0], lines[0]


def gradclip(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gradclip", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text()
            .splitlines() if line.strip()]


# ----------------------------------------------------------------------- checkpoints
class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_run(tmp_path: Path) -> tuple[Path, Path]:
    run_dir, marker = tmp_path / "crafted", tmp_path / "PWNED"
    shutil.copytree(OLD_RUN, run_dir)
    state = torch.load(OLD_RUN / "checkpoint.pt", weights_only=False)
    state["counters"] = RunsACommand(marker)
    torch.save(state, run_dir / "checkpoint.pt")
    return run_dir, marker


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys, command):
    run_dir, marker = crafted_run(tmp_path)
    data = tmp_path / "rows.csv"
    data.write_text("comment_text,toxic\nhello,0\n")
    argv = (["eval", run_dir, "--data", data] if command == "eval"
            else ["train", "--resume", run_dir])
    code, _, stderr = run_cli(argv, capsys)
    assert_one_line(code, stderr, "is not a gradclip checkpoint (refusing to load arbitrary "
                                  "objects)")
    assert not marker.exists()


def test_checkpoints_load_with_weights_only(tmp_path, capsys):
    code, _, _ = run_cli(["train", *SMALL, "--steps", "3", "--out", tmp_path / "run"], capsys)
    assert code == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and isinstance(state["rng"]["python"], tuple)


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp", "sharded-1", None])
def test_the_dcp_folder_a_checkpoint_names_stays_inside_the_run_folder(tmp_path, name):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(Exception, match="corrupt checkpoint"):
        shard_folder(tmp_path / "run", name)


def test_disk_full_while_checkpointing_is_one_line_and_the_old_checkpoint_survives(
        tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    before = (run_dir / "checkpoint.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "No space left on device")
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


# ----------------------------------------------------------------------- bad input
BAD_FLAGS = {
    "threads": (["--threads", "100000"], "--threads"),
    "vocab size": (["--task", "text", "--data", "x.csv", "--vocab-size", "100000000000"],
                   "--vocab-size"),
    "learning rate": (["--lr", "1e39"], "--lr"),
    "norm threshold": (["--clip", "norm:1e39"], "float32"),
    "value threshold": (["--clip", "value:1e39"], "float32"),
    "seed": (["--seed", "99999999999999999999999999"], "--seed"),
    "negative seed": (["--seed", "-1"], "--seed"),
    "batch size": (["--batch-size", "5000000000"], "--batch-size"),
    "hidden size": (["--hidden-size", "3000000000"], "--hidden-size"),
    "sequence length": (["--seq-len", "4000000000"], "--seq-len"),
    "autoclip history": (["--clip", "autoclip:0.1,history_length=10000000000000"],
                         "history_length"),
    "zclip warm-up": (["--clip", "zclip:warmup_steps=100000000000000"], "warmup_steps"),
    "spec and flag policies differ": (["--clip", "norm:1.0,nonfinite=error", "--nonfinite",
                                       "skip"], "give the policy once"),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_a_flag_out_of_range_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch,
                                                              case):
    monkeypatch.chdir(tmp_path)
    flags, expected = BAD_FLAGS[case]
    code, _, stderr = run_cli(["train", *flags], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr and 1 <= len(lines) <= 2, stderr
    assert expected in lines[0]
    assert not (tmp_path / "runs").exists()


def out_cases(tmp_path: Path) -> dict[str, Path]:
    regular = tmp_path / "file"
    regular.write_text("")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    return {"under a regular file": regular / "run", "under /proc": Path("/proc/gradclip-x"),
            "under /sys": Path("/sys/gradclip-x/run"), "300 characters": tmp_path / ("r" * 300),
            "a dangling symlink": dangling}


@pytest.mark.parametrize("case", ["under a regular file", "under /proc", "under /sys",
                                  "300 characters", "a dangling symlink"])
def test_an_out_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path, capsys, case):
    out = out_cases(tmp_path)[case]
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "2", "--out", out], capsys)
    assert_one_line(code, stderr, "cannot create the folder")


def test_a_spec_level_error_policy_stops_with_one_line_naming_the_parameter(tmp_path, capsys):
    code, _, stderr = run_cli(["train", *SMALL, "--steps", "5", "--lr", "1e30", "--clip",
                               "none:nonfinite=error", "--out", tmp_path / "run"], capsys)
    assert_one_line(code, stderr, "non-finite gradient", exit_code=1)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("hidden_size", "abc", "model.hidden_size must be an integer"),
    ("model", None, "model must be an object"),
])
def test_a_hand_edited_config_is_one_line(tmp_path, capsys, field, value, expected):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if field == "model":
        config["model"] = value
    else:
        config["model"][field] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)


def test_plot_that_cannot_write_its_png_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(["train", *SMALL, "--steps", "3", "--out", run_dir], capsys)[0] == 0
    (run_dir / "loss.png").mkdir()  # a folder where the figure should go
    code, _, stderr = run_cli(["plot", run_dir], capsys)
    assert_one_line(code, stderr, "cannot write")


def test_resume_refuses_other_flags_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(["train", *SMALL, "--steps", "3", "--out", run_dir], capsys)[0] == 0
    code, _, stderr = run_cli(["train", "--resume", run_dir, "--steps", "5000", "--lr", "0.5"],
                              capsys)
    assert_one_line(code, stderr, "--lr, --steps cannot be changed")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("column", ["toxic", "comment_text"])
def test_a_csv_with_a_duplicated_column_is_refused_naming_it(tmp_path, capsys, column):
    header = ["comment_text", "toxic", column]
    data = write_csv(tmp_path / "rows.csv", header, [["hi there", "0", "1"]] * 20)
    code, _, stderr = run_cli(["train", "--task", "text", "--data", data, "--out",
                               tmp_path / "run"], capsys)
    assert_one_line(code, stderr, f"the column '{column}' 2 times")
    assert not (tmp_path / "run").exists()


def test_an_unterminated_quote_is_named_with_its_line(tmp_path, capsys):
    data = tmp_path / "rows.csv"
    data.write_text('comment_text,toxic\nfine,0\n"never closed,1\nmore,0\n')
    code, _, stderr = run_cli(["train", "--task", "text", "--data", data, "--out",
                               tmp_path / "run"], capsys)
    assert_one_line(code, stderr, "line 3: unterminated quote")


# ----------------------------------------------------------------------- one writer
def test_two_trainings_into_one_folder_one_is_refused_and_no_step_is_duplicated(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", *SMALL, "--steps", "300", "--out", run_dir]
    first, second = gradclip(*args), gradclip(*args)
    results = [process.communicate(timeout=240) for process in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], results
    refused = [err for (_, err), p in zip(results, (first, second), strict=True)
               if p.returncode == 2][0]
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    assert steps_logged(run_dir) == list(range(1, 301))


def test_a_locked_folder_refuses_a_resume(tmp_path, capsys):
    from gradclip.app.training.rundir import RunLock

    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    lock = RunLock(run_dir)
    try:
        code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    finally:
        lock.release()
    assert_one_line(code, stderr, "in use by another gradclip process")


# ----------------------------------------------------------------------- crashes and logs
def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, capsys):
    run_dir = tmp_path / "run"
    process = gradclip("train", *SMALL, "--steps", "100000", "--checkpoint-every", "0",
                       "--out", run_dir)
    wait_for(run_dir / "metrics.jsonl", process)
    process.kill()
    process.communicate()
    assert not (run_dir / "checkpoint.pt").exists()
    code, _, stderr = run_cli(["train", *SMALL, "--out", run_dir], capsys)
    assert_one_line(code, stderr, f"start it over with --resume {run_dir}")
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["total_steps"] = 20  # a shorter run, so that the test is quick
    (run_dir / "config.json").write_text(json.dumps(config))
    code, stdout, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0 and "starting the run over" in stderr
    assert "completed after 20 of 20 steps" in stdout
    assert steps_logged(run_dir) == list(range(1, 21))


def test_resume_keeps_every_valid_record_and_warns_about_bad_lines(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    (run_dir / "metrics.jsonl").write_text("\n".join(
        [lines[0], "", lines[1], "{torn", lines[2], lines[3]]) + "\n")
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0
    assert "dropped 1 unreadable line(s)" in stderr and "kept 4 records" in stderr
    assert steps_logged(run_dir) == list(range(1, 9))


def test_a_deleted_log_is_reported_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    (run_dir / "metrics.jsonl").unlink()
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0 and "4 step(s) missing from the log" in stderr


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs POSIX signals")
@pytest.mark.parametrize(("sent", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_says_interrupted_and_the_run_resumes_exactly(tmp_path, sent,
                                                                           exit_code):
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    args = [*SMALL, "--steps", "400", "--checkpoint-every", "0", "--log-every", "0"]
    process = gradclip("train", *args, "--out", run_dir)
    wait_for(run_dir / "metrics.jsonl", process)
    time.sleep(0.2)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    assert len(stderr.strip().splitlines()) == 1 and "interrupted by" in stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert summary["status"] == "interrupted" and 0 < state["step"] < 400
    assert steps_logged(run_dir) == list(range(1, state["step"] + 1))
    resumed = gradclip("train", "--resume", run_dir)
    full = gradclip("train", *args, "--out", reference)
    for finished in (resumed, full):
        finished.communicate(timeout=240)
        assert finished.returncode == 0
    expected = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs POSIX signals")
def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    script = [sys.executable, "-c", "import gradclip_cli, sys; sys.exit(gradclip_cli.main())",
              "train", *SMALL, "--out", str(tmp_path / "run")]
    process = subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr
