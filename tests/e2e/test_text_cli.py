"""``gradclip train --task text`` and ``gradclip eval`` end to end, on small generated CSVs."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys

import pytest

pytest.importorskip("tokenizers")

from gradclip.app.cli import main  # noqa: E402

WORDS = ["page", "edit", "article", "source", "thanks", "please", "talk", "section", "link"]
TINY_MODEL = ["--model", "lstm", "--hidden-size", "16", "--embed-dim", "16", "--vocab-size",
              "200", "--max-len", "48", "--batch-size", "16", "--optimizer", "adam", "--lr",
              "0.01", "--threads", "1"]


def write_comments(path, count=160, seed=0, empty_rows=0):
    """Harmless comments labelled by marker words ('grr' toxic, 'bah' insult)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "comment_text", "toxic", "insult"])
        for index in range(count):
            toxic, insult = rng.random() < 0.4, rng.random() < 0.3
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 30))]
            words += ["grr"] * toxic + ["bah\nbah"] * insult
            rng.shuffle(words)
            writer.writerow([f"r{index}", " ".join(words), int(toxic), int(insult)])
        writer.writerows([f"e{index}", "", 0, 1] for index in range(empty_rows))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    data = write_comments(folder / "train.csv", empty_rows=3)
    run_dir = folder / "run"
    code = main(["train", "--task", "text", "--data", str(data), "--epochs", "2",
                 "--out", str(run_dir), "--progress", "never", *TINY_MODEL])
    assert code == 0
    return run_dir


def test_text_run_dir_holds_the_tokenizer_and_the_data_facts(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert (trained_run / "tokenizer.json").is_file()
    assert summary["data"]["skipped_empty"] == 3
    assert set(summary["eval"]["per_label"]) == {"toxic", "insult"}


def test_eval_json_scores_another_csv_in_one_json_object(trained_run, tmp_path):
    unseen = write_comments(tmp_path / "unseen.csv", count=60, seed=9, empty_rows=1)
    result = subprocess.run(
        [sys.executable, "-m", "gradclip", "eval", str(trained_run), "--data", str(unseen),
         "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores["per_label"]) == {"toxic", "insult"}
    assert 0.0 <= scores["mean_roc_auc"] <= 1.0
    assert (scores["rows"], scores["skipped_empty"]) == (60, 1)
    assert {"roc_auc", "accuracy", "positives"} <= set(scores["per_label"]["toxic"])


def test_eval_on_a_csv_without_comment_text_is_one_line_and_exit_2(trained_run, tmp_path,
                                                                   capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,toxic\nhello,1\n", encoding="utf-8")
    assert main(["eval", str(trained_run), "--data", str(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"gradclip: error: {bad} has no 'comment_text' column (its columns: text, toxic); "
        "name the comment column with --text-column NAME"]


BAD_FILES = {
    "missing file": (None, "data file not found"),
    "empty file": (b"", "is empty"),
    "no comment_text": (b"body,toxic\nhi,1\n", "no 'comment_text' column"),
    "no label column": (b"id,comment_text\n1,hi\n", "no label column"),
    "label 2": (b"comment_text,toxic\nhi,0\nho,2\n", "row 2: label 'toxic' must be 0 or 1"),
    "label yes": (b"comment_text,toxic\nhi,yes\n", "row 1: label 'toxic' must be 0 or 1"),
    "latin-1 bytes": (b"comment_text,toxic\ncaf\xe9,1\n", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_text_data_is_one_error_line_and_exit_2(case, tmp_path, capsys):
    content, message = BAD_FILES[case]
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content)
    code = main(["train", "--task", "text", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--progress", "never", *TINY_MODEL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and err[0].startswith("gradclip: error:")


def test_labels_naming_an_absent_column_is_one_error_line(tmp_path, capsys):
    data = write_comments(tmp_path / "data.csv", count=20)
    code = main(["train", "--task", "text", "--data", str(data), "--labels", "toxic,threat",
                 "--out", str(tmp_path / "run"), "--progress", "never", *TINY_MODEL])
    assert code == 2
    assert "label column 'threat' is not in" in capsys.readouterr().err


def test_text_defaults_are_the_tasks_and_recorded_in_config_json(trained_run, tmp_path):
    from gradclip.app.config import RECOMMENDED

    data = write_comments(tmp_path / "d.csv", count=40)
    run_dir = tmp_path / "defaults"
    assert main(["train", "--task", "text", "--data", str(data), "--steps", "2", "--max-len",
                 "16", "--vocab-size", "100", "--out", str(run_dir), "--progress", "never"]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    text = RECOMMENDED["text"]
    assert config["model"]["cell"] == text["model"]
    assert config["model"]["bidirectional"] is text["bidirectional"]
    assert (config["train"]["optimizer"], config["train"]["lr"]) == (text["optimizer"], text["lr"])
    assert config["train"]["threads"] == text["threads"]
    assert config["task"]["ngram_buckets"] > 0  # the wide & deep model
    # explicit flags win, and are what config.json records
    flags = json.loads((trained_run / "config.json").read_text())
    assert (flags["model"]["cell"], flags["train"]["optimizer"]) == ("lstm", "adam")


def test_eval_baseline_prints_the_tfidf_comparison(trained_run, tmp_path):
    pytest.importorskip("sklearn")
    unseen = write_comments(tmp_path / "unseen.csv", count=60, seed=5)
    result = subprocess.run(
        [sys.executable, "-m", "gradclip", "eval", str(trained_run), "--data", str(unseen),
         "--baseline", "--json"], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores["baseline"]["per_label"]) == {"toxic", "insult"}
    assert 0.0 <= scores["baseline"]["mean_roc_auc"] <= 1.0


def test_eval_of_the_training_file_warns_and_scores_only_unseen_rows(trained_run, capsys):
    data = json.loads((trained_run / "config.json").read_text())["task"]["data"]
    code = main(["eval", str(trained_run), "--data", data, "--json"])
    captured = capsys.readouterr()
    assert code == 0
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    scores = json.loads(captured.out)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert scores["rows"] == summary["data"]["val_rows"]  # the validation rows only
    assert scores["training_rows_skipped"] == summary["data"]["train_rows"]


def test_predict_writes_one_probability_per_label(trained_run, tmp_path, capsys):
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text('id,comment_text\na,"grr page"\nb,"thanks\nfor the edit"\nc,\n',
                          encoding="utf-8")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(trained_run), "--data", str(unlabelled), "--out", str(out)]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert rows[0] == ["id", "toxic", "insult"]
    assert [row[0] for row in rows[1:]] == ["a", "b", "c"]
    assert all(0.0 <= float(value) <= 1.0 for row in rows[1:] for value in row[1:])


def table_rows(output):
    """The rows of predict's stdout table: (text, probabilities)."""
    header, *rows = output.strip().splitlines()
    labels = header.split()[1:]
    parsed = []
    for line in rows:
        text, *values = line.rsplit(None, len(labels))
        parsed.append((text.strip(), [float(value) for value in values]))
    return labels, parsed


def test_predict_text_prints_one_row_per_comment_and_one_probability_per_label(
        trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(trained_run), "--text", "grr page", "--text",
                 "thanks for the\nedit"]) == 0
    labels, rows = table_rows(capsys.readouterr().out)
    assert labels == ["toxic", "insult"]
    assert [text for text, _ in rows] == ["grr page", "thanks for the edit"]
    assert all(len(values) == 2 and all(0.0 <= v <= 1.0 for v in values) for _, values in rows)
    assert list(tmp_path.iterdir()) == []  # no predictions.csv without --out


def stdin_of(monkeypatch, text):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


def test_predict_reads_comments_from_stdin_one_per_line_or_as_csv(trained_run, capsys,
                                                                  monkeypatch):
    stdin_of(monkeypatch, "grr page\n\nthanks please\n")
    assert main(["predict", str(trained_run), "--data", "-"]) == 0
    _, lines = table_rows(capsys.readouterr().out)
    stdin_of(monkeypatch, 'id,comment_text\na,grr page\nb,"thanks please"\n')
    assert main(["predict", str(trained_run), "--data", "-"]) == 0
    _, csv_rows = table_rows(capsys.readouterr().out)
    assert [text for text, _ in lines] == [text for text, _ in csv_rows] == [
        "grr page", "thanks please"]
    assert lines == csv_rows  # the same comments score the same, whichever way they came
    assert main(["predict", str(trained_run), "--text", "grr page"]) == 0
    assert table_rows(capsys.readouterr().out)[1] == lines[:1]


def test_predict_from_stdin_with_out_writes_the_csv(trained_run, tmp_path, capsys, monkeypatch):
    stdin_of(monkeypatch, "grr page\nthanks\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run), "--data", "-", "--out", str(out)]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert rows[0] == ["row", "toxic", "insult"] and [row[0] for row in rows[1:]] == ["1", "2"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "one of the arguments --data --text is required"),
    (["--text", "a", "--data", "x.csv"], "not allowed with argument"),
])
def test_predict_needs_exactly_one_source(trained_run, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(trained_run), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_predict_of_empty_stdin_is_one_line(trained_run, capsys, monkeypatch):
    stdin_of(monkeypatch, "\n  \n")
    assert main(["predict", str(trained_run), "--data", "-"]) == 2
    assert capsys.readouterr().err.strip() == "gradclip: error: standard input has no data rows"


def test_text_column_and_delimiter_are_read(tmp_path, capsys):
    data = tmp_path / "semi.csv"
    rows = ["body;toxic"] + [f"{'grr ' * (i % 2)}page {i};{i % 2}" for i in range(30)]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code = main(["train", "--task", "text", "--data", str(data), "--steps", "1",
                 "--out", str(tmp_path / "run"), "--progress", "never", *TINY_MODEL])
    assert code == 2
    err = capsys.readouterr().err
    assert "--text-column" in err and "--delimiter" in err
    code = main(["train", "--task", "text", "--data", str(data), "--text-column", "body",
                 "--delimiter", ";", "--steps", "1", "--out", str(tmp_path / "run"),
                 "--progress", "never", *TINY_MODEL])
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["task"]["text_column"], config["task"]["delimiter"]) == ("body", ";")


def test_eval_every_shows_the_validation_score_and_plots_it(tmp_path, capsys):
    data = write_comments(tmp_path / "d.csv", count=60)
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "text", "--data", str(data), "--steps", "4",
                 "--eval-every", "2", "--out", str(run_dir), "--progress", "always",
                 *TINY_MODEL]) == 0
    assert "val=mean_roc_auc=" in capsys.readouterr().err
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "validation.png").is_file()


def test_keep_best_writes_best_pt_and_eval_uses_it(tmp_path, capsys):
    data = write_comments(tmp_path / "d.csv", count=60)
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "text", "--data", str(data), "--steps", "4",
                 "--eval-every", "2", "--keep-best", "--out", str(run_dir), "--progress",
                 "never", *TINY_MODEL]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "best.pt").is_file() and summary["best_step"] in (2, 4)
    capsys.readouterr()
    unseen = write_comments(tmp_path / "unseen.csv", count=30, seed=4)
    assert main(["eval", str(run_dir), "--data", str(unseen)]) == 0
    assert f"using best.pt (step {summary['best_step']}" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs POSIX signals")
def test_a_killed_default_text_run_resumes_to_the_same_weights(tmp_path):
    import os
    import signal
    import time

    import torch

    data = write_comments(tmp_path / "d.csv", count=120)
    argv = ["train", "--task", "text", "--data", str(data), "--steps", "30", "--max-len", "24",
            "--vocab-size", "100", "--checkpoint-every", "3", "--threads", "1",
            "--progress", "never"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(*extra):
        return subprocess.Popen([sys.executable, "-m", "gradclip", *argv, *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = start("--out", str(whole))
    reference.communicate(timeout=300)
    process = start("--out", str(killed))
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] < 30
    resumed = subprocess.run([sys.executable, "-m", "gradclip", "train", "--resume",
                              str(killed)], env=env, capture_output=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    from gradclip.app.training.checkpoint import load_checkpoint

    # read as gradclip reads it: the wide path's mostly-zero rows are stored compactly
    expected, got = load_checkpoint(whole)["model"], load_checkpoint(killed)["model"]
    assert expected.keys() == got.keys() and "wide.weight" in got
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
