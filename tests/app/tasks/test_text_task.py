"""The text task: tokenizer, length buckets, deterministic batches, rebuild from a run dir, scoring."""

from __future__ import annotations

import csv
import math
import random

import pytest
import torch

pytest.importorskip("tokenizers")

from gradclip.app.config import TaskOptions  # noqa: E402
from gradclip.app.errors import UserError  # noqa: E402
from gradclip.app.tasks.base import Batch, seeded_generator  # noqa: E402
from gradclip.app.tasks.text.data import split_rows  # noqa: E402
from gradclip.app.tasks.text.model import split_inputs  # noqa: E402
from gradclip.app.tasks.text.task import (  # noqa: E402
    TextTask,
    bucketed_batches,
    pad_rows,
    positive_weights,
)
from gradclip.app.tasks.text.tokenizer import (  # noqa: E402
    encode_texts,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

WORDS = ["page", "edit", "article", "source", "thanks", "please", "talk", "section", "link", "image", "revert", "vandal", "policy", "citation", "wiki"]


def synthetic_comments(count, seed):
    """Harmless comments whose labels follow marker words: 'grr' toxic, 'bah' insult."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        toxic, insult = rng.random() < 0.4, rng.random() < 0.3
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 40))]
        words += ["grr"] * toxic + ["bah"] * insult
        rng.shuffle(words)
        rows.append([f"id{index}", " ".join(words), int(toxic), int(insult)])
    return rows


def write_comments(path, count=120, seed=0):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "comment_text", "toxic", "insult"])
        writer.writerows(synthetic_comments(count, seed))
    return path


def task_args(data, **overrides):
    values = dict(seed=0, batch_size=8, seq_len=None, data=data and str(data), vocab_size=200,
                  max_len=24, labels=None, val_fraction=0.25)
    values.update(overrides)
    return TaskOptions(name="text", **values)


@pytest.fixture
def data(tmp_path):
    return write_comments(tmp_path / "comments.csv")


def test_tokenizer_training_is_deterministic():
    texts = [row[1] for row in synthetic_comments(200, 1)]
    assert train_tokenizer(texts, 100).to_str() == train_tokenizer(texts, 100).to_str()


def test_tokenizer_gives_the_same_ids_after_save_and_load(tmp_path):
    texts = [row[1] for row in synthetic_comments(200, 1)]
    tokenizer = train_tokenizer(texts, 100)
    save_tokenizer(tokenizer, tmp_path)
    assert encode_texts(load_tokenizer(tmp_path), texts, 64) == encode_texts(tokenizer, texts, 64)


def test_tokenizer_normalises_case_and_compatibility_forms():
    tokenizer = train_tokenizer(["article page"] * 5, 50)
    assert encode_texts(tokenizer, ["ARTICLE Ｐａｇｅ"], 10) == encode_texts(tokenizer, ["article page"], 10)


def test_encoding_cuts_at_max_len_and_is_never_empty():
    tokenizer = train_tokenizer(["page edit article"] * 5, 50)
    rows = encode_texts(tokenizer, ["page " * 50, "\u2603"], max_len=7)
    assert len(rows[0]) == 7
    assert rows[1] == [tokenizer.token_to_id("[UNK]")]


def test_missing_tokenizer_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_padding_uses_pad_id_and_reports_lengths():
    inputs, lengths = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert inputs.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1]


def test_bucketed_batches_cover_every_row_once():
    lengths = torch.randint(1, 200, (1003,), generator=torch.Generator().manual_seed(0))
    batches = bucketed_batches(lengths, 32, seeded_generator(0, 0), bucket_batches=5)
    assert len(batches) == 32  # ceil(1003 / 32)
    assert sorted(torch.cat(batches).tolist()) == list(range(1003))


def test_bucketing_reduces_padding_compared_with_random_batches():
    lengths = torch.randint(1, 256, (2000,), generator=torch.Generator().manual_seed(0))

    def padding(batches):
        return sum(int(lengths[rows].max()) * len(rows) - int(lengths[rows].sum())
                   for rows in batches)

    random_batches = list(torch.randperm(2000, generator=torch.Generator().manual_seed(1)).split(32))
    bucketed = bucketed_batches(lengths, 32, seeded_generator(0, 0), bucket_batches=10)
    assert padding(bucketed) < padding(random_batches) / 4


def test_train_batches_are_a_function_of_seed_and_index(data):
    first, second = TextTask.from_options(task_args(data)), TextTask.from_options(task_args(data))
    for index in (7, 0, 3 * first.batches_per_epoch + 2):
        a, b = first.train_batch(index), second.train_batch(index)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_each_epoch_sees_every_training_row_in_a_new_order(data):
    task = TextTask.from_options(task_args(data))
    epochs = [[task.train_batch(epoch * task.batches_per_epoch + i).targets
               for i in range(task.batches_per_epoch)] for epoch in (0, 1)]
    assert [sum(len(t) for t in epoch) for epoch in epochs] == [90, 90]
    assert not all(torch.equal(a, b) for a, b in zip(*epochs, strict=True))


def test_batch_shapes_follow_the_task_attributes(data):
    task = TextTask.from_options(task_args(data))
    batch = task.train_batch(0)
    tokens, codes = split_inputs(batch.inputs)  # token ids, then the row's n-gram codes
    assert batch.inputs.dtype == torch.long and tokens.shape[1] == int(batch.lengths.max())
    assert bool((codes >= 0).any(1).all())
    assert batch.targets.shape == (8, task.output_size) == (8, 2)
    assert int(batch.lengths.max()) <= 24


def test_tokenizer_learns_from_training_rows_only(tmp_path):
    rows = synthetic_comments(80, 2)
    _, val = split_rows(len(rows), 0.25, seed=0)
    for index in val.tolist():
        rows[index][1] += " zyzzyvaqq zyzzyvaqq zyzzyvaqq"
    path = tmp_path / "c.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["id", "comment_text", "toxic", "insult"], *rows])
    vocabulary = TextTask.from_options(task_args(path, vocab_size=500)).tokenizer.get_vocab()
    assert not any("zyzz" in token for token in vocabulary)


def test_rebuilt_task_gives_the_same_batches_and_data_facts(data, tmp_path):
    task = TextTask.from_options(task_args(data))
    task.save(tmp_path)
    rebuilt = TextTask.from_config(task.config(), tmp_path)
    assert torch.equal(rebuilt.train_batch(11).inputs, task.train_batch(11).inputs)
    assert rebuilt.describe() == task.describe()
    assert torch.equal(rebuilt.pos_weight, task.pos_weight)


def test_rebuilding_for_scoring_needs_no_training_data(data, tmp_path):
    task = TextTask.from_options(task_args(data))
    task.save(tmp_path)
    data.unlink()
    rebuilt = TextTask.from_config(task.config(), tmp_path, training=False)
    assert (rebuilt.vocab_size, rebuilt.label_names) == (task.vocab_size, ("toxic", "insult"))


def test_resuming_on_a_changed_data_file_is_a_user_error(data, tmp_path):
    task = TextTask.from_options(task_args(data))
    task.save(tmp_path)
    write_comments(data, seed=5)
    with pytest.raises(UserError, match="changed since the run started"):
        TextTask.from_config(task.config(), tmp_path)


def test_text_task_without_data_is_a_user_error():
    with pytest.raises(UserError, match="--data"):
        TextTask.from_options(task_args(None))


def test_labels_flag_selects_the_model_outputs(data):
    task = TextTask.from_options(task_args(data, labels="insult"))
    assert (task.label_names, task.output_size) == (("insult",), 1)


class MarkerModel(torch.nn.Module):
    """Scores each label by how often its marker token appears: a perfect classifier here."""

    def __init__(self, marker_ids):
        super().__init__()
        self.marker_ids = marker_ids

    def forward(self, inputs, lengths):
        return torch.stack([(inputs == i).float().sum(1) * 8 - 4 for i in self.marker_ids], 1)


def test_validation_scores_report_positives_of_the_split(data):
    task = TextTask.from_options(task_args(data, max_len=64))
    model = MarkerModel([task.tokenizer.token_to_id("grr"), task.tokenizer.token_to_id("bah")])
    report = task.evaluate(model, torch.device("cpu"))
    assert report["mean_roc_auc"] == 1.0 and report["rows"] == 30
    assert report["per_label"]["toxic"]["positives"] == int(task.val_targets[:, 0].sum())


def test_scoring_another_file_counts_rows_and_lists_missing_labels(data, tmp_path):
    task = TextTask.from_options(task_args(data, max_len=64))
    model = MarkerModel([task.tokenizer.token_to_id("grr"), task.tokenizer.token_to_id("bah")])
    other = tmp_path / "other.csv"
    other.write_text("comment_text,insult\npage bah,1\n,0\nlink edit,0\n", encoding="utf-8")
    report = task.evaluate_file(model, other, torch.device("cpu"))
    assert (report["rows"], report["skipped_empty"], report["labels_missing"]) == (2, 1, ["toxic"])
    assert list(report["per_label"]) == ["insult"] and report["mean_roc_auc"] == 1.0


def test_positive_weight_is_the_square_root_of_negatives_over_positives():
    targets = torch.tensor([[1.0, 0.0, 1.0]] + [[0.0, 0.0, 1.0]] * 8)
    assert positive_weights(targets, "sqrt").tolist() == [pytest.approx(8 ** 0.5), 1.0, 1.0]
    assert positive_weights(targets, "none").tolist() == [1.0, 1.0, 1.0]


def test_unknown_class_balance_rule_is_a_user_error():
    with pytest.raises(UserError, match="class balance must be one of sqrt, none"):
        positive_weights(torch.ones(3, 1), "inverse")


class ConstantModel(torch.nn.Module):
    def forward(self, inputs, lengths):
        return torch.zeros(len(inputs), 2)


def test_scores_undo_the_log_odds_shift_of_the_positive_weight(data):
    task = TextTask.from_options(task_args(data))
    logits = task.predict_logits(ConstantModel(), task.val_ids, torch.device("cpu"))
    assert torch.allclose(logits, -task.pos_weight.log().expand(len(task.val_ids), 2))
    assert not torch.equal(task.pos_weight, torch.ones(2))


def test_training_loss_weights_the_positive_term(data):
    task = TextTask.from_options(task_args(data))
    batch = task.train_batch(0)
    outputs = torch.zeros_like(batch.targets)
    expected = (batch.targets * task.pos_weight * math.log(2) + (1 - batch.targets) * math.log(2))
    assert float(task.loss(outputs, batch)) == pytest.approx(float(expected.mean()))


def test_a_two_path_output_is_trained_by_the_sum_of_the_two_paths_losses(data):
    task = TextTask.from_options(task_args(data))
    batch = task.train_batch(0)
    wide, deep = torch.randn_like(batch.targets), torch.randn_like(batch.targets)
    separate = task.loss(torch.cat([wide, deep], dim=1), batch)
    torch.testing.assert_close(separate, task.loss(wide, batch) + task.loss(deep, batch))


def test_the_wide_intercept_starts_at_the_weighted_log_odds_of_the_training_split(data):
    task = TextTask.from_options(task_args(data))
    model = task.build_model(cell="gru", hidden_size=4, layers=1, bidirectional=True,
                             dropout=0.0, embed_dim=4)
    prior = task.train_targets.mean(0)
    expected = (prior / (1 - prior)).log() + task.pos_weight.log()
    torch.testing.assert_close(model.wide_bias.detach(), expected)
    # the weighted loss of a constant logit is smallest at that intercept
    intercept = expected.clone().requires_grad_()
    everyone = Batch(None, None, task.train_targets)
    task.loss(intercept.expand(len(task.train_targets), -1), everyone).backward()
    torch.testing.assert_close(intercept.grad, torch.zeros_like(intercept), atol=1e-6, rtol=0)
