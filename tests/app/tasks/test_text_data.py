"""Reading and validating toxic-comment CSV files, and the seeded train/validation split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from gradclip.app.errors import UserError
from gradclip.app.tasks.text.data import LABELS, read_comments, split_rows

HEADER = ["id", "comment_text", *LABELS]


def write_rows(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_fields_with_quoted_newlines_are_one_row(tmp_path):
    path = write_rows(tmp_path / "c.csv", HEADER, [
        ["a", "first line\nsecond line\r\nthird", 1, 0, 1, 0, 0, 0],
        ["b", 'a "quoted" word, and a comma', 0, 0, 0, 0, 1, 1],
    ])
    table = read_comments(path)
    assert table.texts == ["first line\nsecond line\r\nthird", 'a "quoted" word, and a comma']
    assert table.label_names == LABELS
    assert table.targets.tolist() == [[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]]


def test_rows_with_empty_text_are_skipped_and_counted(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic"],
                      [["kept", 1], ["", 0], ["   \n ", 1], ["also kept", 0]])
    table = read_comments(path)
    assert table.texts == ["kept", "also kept"]
    assert (table.rows_read, table.skipped_empty) == (4, 2)


def test_a_file_of_only_empty_texts_is_a_user_error(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic"], [["", 0], [" ", 1]])
    with pytest.raises(UserError, match="no row has any comment text"):
        read_comments(path)


def test_field_longer_than_the_csv_module_default_limit_is_read(tmp_path):
    from gradclip.app.tasks.text.data import MAX_COMMENT_CHARS

    long_text = "word " * 40_000  # 200,000 characters: past csv's 131,072 field limit
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic"], [[long_text, 1]])
    assert read_comments(path).texts == [long_text[:MAX_COMMENT_CHARS]]  # read, then cut


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffcomment_text,toxic\nhello,1\n".encode())
    assert read_comments(path).label_names == ("toxic",)


def test_missing_file_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.csv"):
        read_comments(tmp_path / "nope.csv")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is empty"):
        read_comments(path)


def test_csv_without_comment_text_is_a_user_error_listing_its_columns(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["text", "toxic"], [["hi", 0]])
    with pytest.raises(UserError, match="no 'comment_text' column .*text, toxic"):
        read_comments(path)


def test_csv_without_any_label_column_is_a_user_error(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["id", "comment_text"], [["a", "hi"]])
    with pytest.raises(UserError, match="no label column"):
        read_comments(path)


@pytest.mark.parametrize("value", ["2", "yes", "-1", "0.5", ""])
def test_label_outside_0_1_names_the_column_and_the_row(tmp_path, value):
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic", "insult"],
                      [["fine text", 0, 0], ["secret words", 1, value]])
    with pytest.raises(UserError, match="row 2: label 'insult' must be 0 or 1") as error:
        read_comments(path)
    assert "secret words" not in str(error.value)


def test_short_row_reports_its_label_as_missing(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("comment_text,toxic,insult\nhello,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="row 1: label 'insult' must be 0 or 1, got missing"):
        read_comments(path)


def test_bytes_that_are_not_utf8_are_a_user_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("comment_text,toxic\ncaf\xe9 au lait,0\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 .*0xe9"):
        read_comments(path)


def test_labels_subset_keeps_those_columns_in_the_given_order(tmp_path):
    path = write_rows(tmp_path / "c.csv", HEADER, [["a", "hi", 1, 0, 0, 0, 1, 0]])
    table = read_comments(path, ["insult", "toxic"])
    assert table.label_names == ("insult", "toxic")
    assert table.targets.tolist() == [[1.0, 1.0]]


def test_labels_subset_naming_an_absent_column_is_a_user_error(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic"], [["hi", 1]])
    with pytest.raises(UserError, match="label column 'threat' is not in .*other columns: .*toxic.*--labels"):
        read_comments(path, ["toxic", "threat"])


def test_missing_ok_drops_labels_the_file_lacks(tmp_path):
    path = write_rows(tmp_path / "c.csv", ["comment_text", "toxic"], [["hi", 1]])
    assert read_comments(path, ["threat", "toxic"], missing_ok=True).label_names == ("toxic",)


def test_split_is_a_deterministic_partition_of_the_rows():
    train, val = split_rows(1000, 0.1, seed=3)
    again_train, again_val = split_rows(1000, 0.1, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 100
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))


def test_split_depends_on_the_seed():
    assert not torch.equal(split_rows(1000, 0.1, seed=0)[1], split_rows(1000, 0.1, seed=1)[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_outside_0_1_is_a_user_error(fraction):
    with pytest.raises(UserError, match="--val-fraction"):
        split_rows(100, fraction, seed=0)


def test_split_keeps_at_least_one_row_on_each_side():
    train, val = split_rows(2, 0.01, seed=0)
    assert (len(train), len(val)) == (1, 1)


SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "toxic_comments.csv"


@pytest.mark.skipif(not SHARED_DATA.is_file(), reason="needs ../shared/data beside the clone")
def test_real_jigsaw_file_reads_every_row_with_its_label_counts():
    table = read_comments(SHARED_DATA)
    assert (len(table.texts), table.skipped_empty) == (9000, 0)
    assert table.targets.sum(0).int().tolist() == [3105, 291, 1711, 91, 1627, 278]
