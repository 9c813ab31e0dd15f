"""A run folder is untrusted input: every file read from it is checked, and a bad one is one line.

Each case of the adversarial pass (issue 29, the reading half) is a test: a crafted or damaged
``checkpoint.pt``, ``config.json``, ``metrics.jsonl``, ``training_rows.txt``, ``best.pt`` or data
path ends with exit status 2 and one stderr line naming the bad field, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from tests.e2e.cli import run_cli
from tests.e2e.test_trust import SMALL, assert_one_line


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 3-step run of the adding task (hidden size 8)."""
    from gradclip.app.cli import main

    run_dir = tmp_path_factory.mktemp("untrusted") / "run"
    assert main(["train", *SMALL, "--steps", "3", "--out", str(run_dir)]) == 0
    return run_dir


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    return run_dir


def edit_checkpoint(run_dir: Path, edit) -> None:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, run_dir / "checkpoint.pt")


def first_weight(state) -> str:
    return next(iter(state["model"]))


def assign(path: str, value):
    """An edit that sets ``state[a][b]...`` (dotted ``path``; integer parts index)."""
    def edit(state):
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        target = state
        for part in parents:
            target = target[part]
        target[last] = value() if callable(value) else value
    return edit


def deep_list(levels: int):
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


CHECKPOINT_CASES = {
    "model is a string": (assign("model", "x"), "model must be an object"),
    "optimizer is empty": (assign("optimizer", {}), "optimizer must hold exactly state"),
    "negative counters.step": (assign("counters.step", -5), "counters.step must be an integer"),
    "negative step": (assign("step", -1), "step must be an integer >= 0"),
    "step is true": (assign("step", True), "step must be an integer >= 0, got true"),
    "data position a string": (assign("next_batch_index", "7"), "next_batch_index must be"),
    "torch rng of ten floats": (assign("rng.torch", lambda: torch.zeros(10)),
                                "rng.torch is not a torch RNG state"),
    "torch rng of ten bytes": (assign("rng.torch", lambda: torch.zeros(10, dtype=torch.uint8)),
                               "rng.torch is not a torch RNG state"),
    "python rng cut short": (assign("rng.python", (3, (1, 2), None)),
                             "rng.python is not a python RNG state"),
    "numpy rng of three keys": (assign("rng.numpy", {
        "key": "MT19937", "state": torch.zeros(3, dtype=torch.int64), "pos": 0,
        "has_gauss": 0, "cached_gaussian": 0.0}), "rng.numpy is not a numpy RNG state"),
    "unknown rng": (assign("rng.java", 1), "rng.java is not an RNG gradclip saves"),
    "no rng": (lambda state: state.pop("rng"), "rng is missing"),
    "unknown top-level key": (assign("payload", 1), "'payload' is not one a checkpoint holds"),
    "scaler a string": (assign("scaler", "x"), "scaler must be an object"),
    "nested 50 deep": (assign("clipper", lambda: {"x": deep_list(50)}), "nested too deeply"),
    "a meta weight": (lambda state: state["model"].update(
        {first_weight(state): torch.empty(8, 2, device="meta")}), "is a meta tensor"),
    "a sparse weight": (lambda state: state["model"].update(
        {first_weight(state): state["model"][first_weight(state)].to_sparse()}),
        "is a sparse_coo tensor"),
    "a missing weight": (lambda state: state["model"].pop("head.bias"),
                         "model.head.bias is missing"),
    "an extra weight": (assign("model.extra", lambda: torch.zeros(1)),
                        "model.extra is not a weight"),
    "a weight of another shape": (lambda state: state["model"].update(
        {"head.weight": torch.zeros(1, 16)}), "model.head.weight is a tensor of shape (1, 16)"),
    "a weight of another dtype": (lambda state: state["model"].update(
        {"head.bias": torch.zeros(1).double()}),
        "model.head.bias is a tensor of shape (1,) (torch.float64)"),
    "no optimizer group": (assign("optimizer.param_groups", []),
                           "optimizer.param_groups must be a list of 1 group(s)"),
    "a group of one parameter": (assign("optimizer.param_groups.0.params", [0]),
                                 "optimizer.param_groups.0.params must number the 6"),
    "an unknown group setting": (assign("optimizer.param_groups.0.betas", (0.9, 0.99)),
                                 "betas is not a setting of SGD"),
    "a non-finite group setting": (assign("optimizer.param_groups.0.lr", float("nan")),
                                   "optimizer.param_groups.0.lr must be a finite number"),
    "a momentum buffer of another shape": (
        assign("optimizer.state.0", lambda: {"momentum_buffer": torch.zeros(3)}),
        "optimizer.state.0.momentum_buffer is a tensor of shape (3,)"),
    "state of a parameter that is not there": (
        assign("optimizer.state.99", {"momentum_buffer": None}),
        "optimizer.state.99 is the state of a parameter the model does not have"),
    "adam state in an sgd run": (
        assign("optimizer.state.0", lambda: {"exp_avg": torch.zeros(8, 2)}),
                                 "exp_avg is not a state this optimizer keeps"),
    "negative scheduler epoch": (assign("scheduler.last_epoch", -3),
                                 "scheduler.last_epoch must be an integer >= 0"),
    "a scheduler key that replaces its optimizer": (assign("scheduler.optimizer", 5),
                                                    "scheduler.optimizer is not a setting"),
    "a zclip state for norm clipping": (assign("clipper", {"kind": "zclip"}),
                                        "clipper does not fit --clip norm:1.0"),
    "an unknown counter": (assign("counters.bonus", 1), "counters.bonus is not a counter"),
    "an unknown status": (assign("counters.status", "weird"), "counters.status must be one of"),
    "negative seconds": (assign("counters.seconds", -1.0), "counters.seconds must be a finite"),
    "a NaN largest norm": (assign("counters.max_grad_norm", float("nan")),
                           "counters.max_grad_norm must be a finite number >= 0, got nan"),
    "a config copy that is a list": (assign("config", [1]), "config must be an object"),
    "a config copy holding a tensor": (assign("config", lambda: {"train": torch.zeros(2)}),
                                       "config must be an object of plain values"),
    "counters disagree with step": (assign("counters.step", 2),
                                    "counters.step is 2, but step is 3"),
    "a step past the run's end": (lambda state: (state.update(step=9, next_batch_index=9),
                                                 state["counters"].update(step=9,
                                                                          next_batch_index=9)),
                                  "step 9 is past train.total_steps (3)"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_a_crafted_checkpoint_field_is_one_line_naming_it(finished_run, tmp_path, capsys, case):
    run_dir = copy_run(finished_run, tmp_path)
    edit, expected = CHECKPOINT_CASES[case]
    edit_checkpoint(run_dir, edit)
    log = (run_dir / "metrics.jsonl").read_text()
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)
    assert (run_dir / "metrics.jsonl").read_text() == log  # nothing touched before the check


def test_an_unedited_copy_resumes(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    code, stdout, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0, stderr
    assert "completed after 3 of 3 steps" in stdout


def test_a_checkpoint_of_another_hidden_size_is_refused_naming_it(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    flags = [*SMALL, "--steps", "3"]
    flags[flags.index("--hidden-size") + 1] = "16"
    assert run_cli(["train", *flags, "--out", other], capsys)[0] == 0
    run_dir = copy_run(finished_run, tmp_path)
    shutil.copy(other / "checkpoint.pt", run_dir / "checkpoint.pt")
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "the model config.json builds has a tensor of shape (8, 2)")
    assert "another --hidden-size?" in stderr


@pytest.mark.parametrize(("command", "expected"), [
    ("resume", "corrupt checkpoint"), ("eval", "corrupt checkpoint")])
@pytest.mark.parametrize("content", ["hello", "truncated", "one byte changed"])
def test_a_checkpoint_that_is_no_torch_archive_is_one_line(finished_run, tmp_path, capsys,
                                                            content, command, expected):
    run_dir = copy_run(finished_run, tmp_path)
    path = run_dir / "checkpoint.pt"
    data = path.read_bytes()
    pickle_at = data.index(b"\x80", data.index(b"data.pkl"))  # the pickle's first opcode
    path.write_bytes({"hello": b"hello\n", "truncated": data[: len(data) // 2],
                      "one byte changed": data[:pickle_at] + b"\xff" + data[pickle_at + 1:]
                      }[content])
    argv = (["train", "--resume", run_dir] if command == "resume"
            else ["eval", run_dir, "--data", run_dir / "config.json"])
    code, _, stderr = run_cli(argv, capsys)
    assert_one_line(code, stderr, expected)


@pytest.mark.parametrize(("target", "expected"), [
    ("/etc/passwd", "corrupt checkpoint"), ("/dev/zero", "a character device, not a regular"),
    ("folder", "a folder, not a regular file")])
def test_a_checkpoint_linked_elsewhere_is_read_as_nothing_but_one_line(
        finished_run, tmp_path, capsys, target, expected):
    # eval only reads (train --resume refuses a folder holding a link before reading it)
    if not Path(target).exists() and target != "folder":
        pytest.skip(f"{target} does not exist here")
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    if target == "folder":
        (run_dir / "checkpoint.pt").mkdir()
    else:
        (run_dir / "checkpoint.pt").symlink_to(target)
    code, _, stderr = run_cli(["eval", run_dir, "--data", run_dir / "config.json"], capsys)
    assert_one_line(code, stderr, expected)


# ----------------------------------------------------------------------- config.json
CONFIG_CASES = {
    "threads 1000000": ("train", "threads", 1_000_000, "train.threads must be an integer "
                                                      "between 1 and"),
    "threads 2**63": ("train", "threads", 2**63, "train.threads must be"),
    "seed 2**64": ("train", "seed", 2**64, "train.seed must be an integer between 0 and 2**63"),
    "hidden size 10**30": ("model", "hidden_size", 10**30, "model.hidden_size must be an "
                                                           "integer between 1 and 65,536"),
    "dropout 5": ("model", "dropout", 5, "model.dropout must be a number in [0, 1)"),
    "lr -1": ("train", "lr", -1, "train.lr must be a number in (0, 3.403e+38]"),
    "momentum -1": ("train", "momentum", -1, "train.momentum must be a number in [0, 1)"),
    "weight decay 1e300": ("train", "weight_decay", 1e300, "train.weight_decay must be"),
    "an unknown cell": ("model", "cell", "banana", "model.cell must be one of rnn, "),
    "an unknown optimizer": ("train", "optimizer", "sgdd", "train.optimizer must be one of"),
    "heads for a recurrent model": ("model", "heads", 2, "--heads is read only by --model "
                                                         "transformer"),
    "a transformer for the adding task": ("model", "cell", "transformer",
                                          "--model transformer is a character language model"),
    "zero layers": ("model", "layers", 0, "model.layers must be an integer between 1 and"),
    "accumulate 10**9": ("train", "accumulate", 10**9, "train.accumulate must be"),
    "total steps null": ("train", "total_steps", None, "train.total_steps must be set"),
    "seq_len 10**12": ("task", "seq_len", 10**12, "task.seq_len must be an integer between 1"),
    "seq_len a string": ("task", "seq_len", "6", "task.seq_len must be an integer"),
    "ngram buckets -1": ("task", "ngram_buckets", -1, "task.ngram_buckets must be an integer"),
    "ngram buckets 10**12": ("task", "ngram_buckets", 10**12, "task.ngram_buckets must be"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_config_value_out_of_its_flag_range_is_one_line(finished_run, tmp_path, capsys,
                                                          case):
    section, key, value, expected = CONFIG_CASES[case]
    run_dir = copy_run(finished_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config[section][key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("lr", 0.5, "gives train.lr 0.5 (optimizer.param_groups.0.initial_lr), but"),
    ("momentum", 0.5, "gives train.momentum 0.5 (optimizer.param_groups.0.momentum), but"),
    ("weight_decay", 0.1, "gives train.weight_decay 0.1 (optimizer.param_groups.0.weight_decay)"),
])
def test_a_hand_edit_that_resume_would_ignore_is_refused_naming_both_values(
        finished_run, tmp_path, capsys, key, value, expected):
    run_dir = copy_run(finished_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["train"][key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)
    assert "put the value back, or start a new run" in stderr


@pytest.mark.parametrize(("content", "expected"), [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ('{"task": ' + "9" * 5000 + "}", "a number with too many digits"),
    ("\xff\xfe", "not UTF-8 text"),
])
def test_a_config_that_json_cannot_hold_is_one_line(finished_run, tmp_path, capsys, content,
                                                    expected):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "config.json").write_bytes(content.encode("latin-1"))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_config_linked_to_dev_zero_is_refused_unread(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "config.json").unlink()
    (run_dir / "config.json").symlink_to("/dev/zero")
    code, _, stderr = run_cli(["eval", run_dir, "--data", run_dir / "summary.json"], capsys)
    assert_one_line(code, stderr, "it is a character device, not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_a_pipe_in_place_of_a_run_file_is_refused_without_waiting(finished_run, tmp_path,
                                                                  capsys, name):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / name).unlink()
    os.mkfifo(run_dir / name)  # reading it would wait for a writer forever
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "it is a pipe, not a regular file")


# ----------------------------------------------------------------------- flags
FLAG_CASES = {
    "steps": (["train", "--steps", str(10**10)], "--steps: must be an integer between 1 and"),
    "accumulate": (["train", "--accumulate", str(10**9)], "--accumulate: must be"),
    "layers": (["train", "--layers", str(10**9)], "--layers: must be an integer between 1"),
    "weight decay": (["train", "--weight-decay", "1e300"], "--weight-decay: must be a number"),
    "seeds": (["compare", "--seeds", str(10**11)], "--seeds: must be an integer between 1"),
    "jobs": (["compare", "--jobs", "100000"], "--jobs: must be an integer between 1"),
    "a 5,000-digit seed": (["train", "--seed", "9" * 5000], "--seed: expected an integer"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_a_flag_beyond_its_bound_is_refused_at_parse_time(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    argv, expected = FLAG_CASES[case]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in stderr and expected in stderr, stderr
    assert len(stderr) < 400, stderr  # a long value is cut short in the message
    assert not list(tmp_path.iterdir())  # no folder left behind


# ----------------------------------------------------------------------- metrics.jsonl
def metrics_lines(run_dir: Path) -> list[str]:
    return (run_dir / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize("line", ["[" * 100_000 + "]" * 100_000,
                                  '{"step": ' + "9" * 5000 + "}"])
@pytest.mark.parametrize("command", ["resume", "plot"])
def test_a_log_line_json_cannot_hold_is_dropped_and_counted(finished_run, tmp_path, capsys,
                                                            line, command):
    run_dir = copy_run(finished_run, tmp_path)
    lines = metrics_lines(run_dir)
    (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    argv = ["train", "--resume", run_dir] if command == "resume" else ["plot", run_dir]
    code, _, stderr = run_cli(argv, capsys)
    warnings = [text for text in stderr.splitlines() if "warning" in text]
    assert code == 0 and "Traceback" not in stderr, stderr
    assert len(warnings) == 1 and "dropped 1 unreadable line(s)" in warnings[0]
    assert "kept 3 records" in warnings[0]


@pytest.mark.parametrize("command", ["resume", "plot"])
def test_a_folder_in_place_of_the_log_is_one_line(finished_run, tmp_path, capsys, command):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").mkdir()
    argv = ["train", "--resume", run_dir] if command == "resume" else ["plot", run_dir]
    code, _, stderr = run_cli(argv, capsys)
    assert_one_line(code, stderr, "it is a folder, not a regular file")


def test_records_without_a_valid_step_never_displace_a_valid_one(finished_run, tmp_path,
                                                                 capsys):
    run_dir = copy_run(finished_run, tmp_path)
    first, second, third = metrics_lines(run_dir)
    fake = json.dumps({"step": True, "loss": -1.0})  # true is 1 to Python: not a step here
    forged = json.dumps({"step": 2, "loss": -2.0})  # a second step 2: which one is real?
    late = json.dumps({"step": 1, "loss": -3.0, "out": "of order"})
    text = "\n".join([fake, first, second, forged, third, late, '{"step": -4}', "[1]"]) + "\n"
    (run_dir / "metrics.jsonl").write_text(text)
    code, _, stderr = run_cli(["plot", run_dir], capsys)
    assert code == 0, stderr
    assert ("kept 2 records; dropped 1 unreadable line(s), 2 record(s) without a positive "
            "integer step, 2 record(s) of a duplicated step, 1 record(s) out of step "
            "order") in stderr
    # on resume the log is cut back to its valid records: a forged one never wins
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0 and "1 step(s) missing from the log" in stderr, stderr
    assert metrics_lines(run_dir) == [first, third]


# ----------------------------------------------------------------------- text runs
@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    from gradclip.app.cli import main
    from tests.e2e.test_text_cli import TINY_MODEL, write_comments

    folder = tmp_path_factory.mktemp("untrusted-text")
    data = write_comments(folder / "train.csv", count=60)
    run_dir = folder / "run"
    assert main(["train", "--task", "text", "--data", str(data), "--steps", "2", "--eval-every",
                 "1", "--keep-best", "--out", str(run_dir), "--progress", "never",
                 *TINY_MODEL]) == 0
    return run_dir


def copy_text_run(text_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(text_run, run_dir)
    return run_dir


def edit_task(run_dir: Path, **settings) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    config["task"].update(settings)
    (run_dir / "config.json").write_text(json.dumps(config))


TEXT_CONFIG_CASES = {
    "pos_weight of the wrong length": ({"pos_weight": [1.0]}, "task.pos_weight must be 2"),
    "a negative pos_weight": ({"pos_weight": [1.0, -2.0]}, "task.pos_weight must be 2 positive"),
    "max_len 0": ({"max_len": 0}, "task.max_len must be an integer between 1 and"),
    "max_len -3": ({"max_len": -3}, "task.max_len must be an integer between 1 and"),
    "ngram_buckets -1": ({"ngram_buckets": -1}, "task.ngram_buckets must be an integer"),
    "ngram_buckets 10**12": ({"ngram_buckets": 10**12}, "task.ngram_buckets must be"),
    "no labels": ({"labels": []}, "task.labels must be a non-empty list"),
}


@pytest.mark.parametrize("case", list(TEXT_CONFIG_CASES))
def test_a_text_setting_accepted_but_wrong_is_one_line(text_run, tmp_path, capsys, case):
    settings, expected = TEXT_CONFIG_CASES[case]
    run_dir = copy_text_run(text_run, tmp_path)
    edit_task(run_dir, **settings)
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, expected)


def test_training_rows_with_non_ascii_bytes_is_one_line(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    (run_dir / "best.pt").unlink()  # eval would say first that it uses it
    with open(run_dir / "training_rows.txt", "ab") as handle:
        handle.write(b"\xc3\xa9t\xe9\n")
    data = json.loads((run_dir / "config.json").read_text())["task"]["data"]
    code, _, stderr = run_cli(["eval", run_dir, "--data", data], capsys)
    assert_one_line(code, stderr, "training_rows.txt: not ASCII text (byte 0xc3")


def test_best_pt_with_a_score_that_is_no_number_is_one_line(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    assert (run_dir / "best.pt").is_file()
    edit_checkpoint_named(run_dir / "best.pt", score="high")
    data = json.loads((run_dir / "config.json").read_text())["task"]["data"]
    code, _, stderr = run_cli(["eval", run_dir, "--data", data], capsys)
    assert_one_line(code, stderr, "best.pt: score must be a finite number, got the string")


def edit_checkpoint_named(path: Path, **entries) -> None:
    state = torch.load(path, weights_only=True)
    state.update(entries)
    torch.save(state, path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_data_path_that_now_points_to_dev_zero_is_one_line(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    link = tmp_path / "data.csv"
    link.symlink_to("/dev/zero")
    edit_task(run_dir, data=str(link))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, "it is a character device, not a regular file")



def test_a_byte_changed_in_a_weight_fails_the_archive_check(finished_run, tmp_path, capsys):
    """torch.load never checks the zip's CRC-32: without this check the damage would load."""
    import zipfile

    run_dir = copy_run(finished_run, tmp_path)
    path = run_dir / "checkpoint.pt"
    with zipfile.ZipFile(path) as archive:
        entry = next(info for info in archive.infolist() if "/data/" in info.filename)
    data = bytearray(path.read_bytes())
    local = entry.header_offset  # its local header: the name's and extra field's lengths
    name_length, extra_length = struct.unpack("<HH", data[local + 26:local + 30])
    data[local + 30 + name_length + extra_length] ^= 0x40  # the first byte of the weight
    path.write_bytes(bytes(data))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert_one_line(code, stderr, f"{entry.filename} fails its CRC-32 check")


# a value config.json gives, changed by hand after the run started: resume would apply it
# mid-run (or ignore it) without a word; the checkpoint's copy of the config refuses it
EDITS_AFTER_THE_START = [("train", "total_steps", 30), ("train", "schedule", "cosine"),
                         ("train", "batch_size", 4), ("task", "seq_len", 5),
                         ("model", "dropout", 0.5), ("train", "seed", 7), ("task", "seed", 7),
                         ("train", "clip", "value:0.5")]


@pytest.mark.parametrize(("section", "key", "value"), EDITS_AFTER_THE_START)
def test_a_config_edited_after_the_checkpoint_is_refused_naming_the_value(
        finished_run, tmp_path, capsys, section, key, value):
    run_dir = copy_run(finished_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    before = config[section][key]
    config[section][key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    if key == "clip":  # the clipper's own state check comes first, naming the spec
        assert_one_line(code, stderr, "clipper does not fit --clip value:0.5")
        return
    assert_one_line(code, stderr, f"gives {section}.{key} ")
    assert f"was trained with {before!r}:" in stderr, stderr


def test_a_config_whose_version_line_changed_still_resumes(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["gradclip_version"] = "0.1.0"
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0, stderr


@pytest.mark.parametrize("command", ["resume", "plot"])
@pytest.mark.parametrize(("field", "value"), [("loss", 7 * 10**400), ("loss", "abc"),
                                              ("grad_norm", [1]), ("lr", True)])
def test_a_record_whose_number_is_no_number_is_dropped_and_counted(
        finished_run, tmp_path, capsys, command, field, value):
    run_dir = copy_run(finished_run, tmp_path)
    first, second, third = metrics_lines(run_dir)
    record = json.loads(second) | {field: value}
    (run_dir / "metrics.jsonl").write_text("\n".join([first, json.dumps(record), third]) + "\n")
    argv = ["train", "--resume", run_dir] if command == "resume" else ["plot", run_dir]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert "1 record(s) with a value that is no number" in stderr, stderr


@pytest.mark.parametrize(("content", "expected"), [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"), (None, "it is a pipe")])
def test_plot_reads_config_json_as_untrusted(finished_run, tmp_path, capsys, content, expected):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "config.json").unlink()
    if content is None:
        os.mkfifo(run_dir / "config.json")  # reading it would wait forever
    else:
        (run_dir / "config.json").write_text(content)
    code, _, stderr = run_cli(["plot", run_dir], capsys)
    assert_one_line(code, stderr, expected)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("summary.json", "[" * 100_000, "summary.json: JSON nested too deeply"),
    ("summary.json", '{"status": "completed", "eval": "junk"}', "eval must be an object of"),
    ("summary.json", '{"status": "completed", "step": "x"}', "step must be an integer >= 0"),
    ("summary.json", '{"status": "completed", "seconds": ' + "7" * 400 + "}",
     "seconds must be a number"),
    ("summary.json", "[]", "summary.json: expected a JSON object"),
    ("monitor.json", "[" * 100_000, "monitor.json: JSON nested too deeply"),
    ("monitor.json", '{"time_profiles": {"a": ["x"]}}', "time_profiles must map names"),
])
def test_a_kept_grid_runs_files_are_checked_before_a_report_reads_them(
        finished_run, tmp_path, name, content, expected):
    """compare and benchmark keep the runs an earlier invocation finished (finished_result)."""
    from gradclip.app.errors import UserError
    from gradclip.app.experiments.compare import finished_result

    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / name).write_text(content)
    with pytest.raises(UserError, match=expected):
        finished_result(run_dir)


def test_a_kept_grid_run_with_good_files_is_read_back(finished_run, tmp_path):
    from gradclip.app.experiments.compare import finished_result

    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "monitor.json").write_text('{"time_profiles": {"layer": [1.0, "nan"]}}')
    result = finished_result(run_dir)
    assert result is not None and result["summary"]["status"] == "completed"
    assert result["monitor"]["time_profiles"] == {"layer": [1.0, "nan"]}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_kept_grid_runs_summary_that_is_a_pipe_is_refused_without_waiting(finished_run,
                                                                           tmp_path):
    from gradclip.app.errors import UserError
    from gradclip.app.experiments.compare import finished_result

    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "summary.json").unlink()
    os.mkfifo(run_dir / "summary.json")
    with pytest.raises(UserError, match="it is a pipe"):
        finished_result(run_dir)


# ----------------------------------------------------------------------- predict --out
def predict(run_dir: Path, out: Path, capsys) -> tuple[int, str, str]:
    return run_cli(["predict", run_dir, "--text", "hello there", "--out", out], capsys)


def test_predict_never_replaces_a_file_it_did_not_write(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    config = (run_dir / "config.json").read_text()
    code, _, stderr = predict(run_dir, run_dir / "config.json", capsys)
    assert_one_line(code, stderr, "exists and is not an earlier predict output")
    assert (run_dir / "config.json").read_text() == config


def test_predict_never_writes_through_a_link(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    decoy = tmp_path / "decoy.txt"
    decoy.write_text("mine")
    (tmp_path / "link.csv").symlink_to(decoy)
    code, _, stderr = predict(run_dir, tmp_path / "link.csv", capsys)
    assert_one_line(code, stderr, "is a symbolic link")
    assert decoy.read_text() == "mine"


def test_predict_replaces_its_own_earlier_output(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    out = tmp_path / "predictions.csv"
    assert predict(run_dir, out, capsys)[0] == 0
    first = out.read_text()
    code, _, stderr = predict(run_dir, out, capsys)
    assert code == 0, stderr
    assert out.read_text() == first and first.startswith("row,")


@pytest.mark.parametrize(("key", "value"), [("threads", 2), ("device", "auto"),
                                            ("checkpoint_every", 1), ("log_every", 2)])
def test_a_config_edit_for_another_machine_or_the_bookkeeping_still_resumes(
        finished_run, tmp_path, capsys, key, value):
    run_dir = copy_run(finished_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["train"][key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0, stderr


def test_a_text_run_whose_data_moved_resumes_from_its_new_place(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    moved = tmp_path / "moved.csv"
    shutil.copy(config["task"]["data"], moved)  # the same bytes: its sha256 matches
    edit_task(run_dir, data=str(moved))
    code, _, stderr = run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0, stderr


def test_predict_out_of_a_run_with_broken_labels_is_one_line(text_run, tmp_path, capsys):
    run_dir = copy_text_run(text_run, tmp_path)
    edit_task(run_dir, labels=5)
    code, _, stderr = predict(run_dir, tmp_path / "p.csv", capsys)
    assert_one_line(code, stderr, "task.labels")


@pytest.mark.parametrize(("name", "expected"), [
    ("nowhere/p.csv", "which is not a folder"), ("a" * 300 + ".csv", "cannot write --out")])
def test_predict_out_that_cannot_be_written_is_one_line(text_run, tmp_path, capsys, name,
                                                       expected):
    code, _, stderr = predict(text_run, tmp_path / name, capsys)
    assert_one_line(code, stderr, expected)
