"""The text task's wide & deep model: packed inputs, padding, optimizer groups, older runs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("sklearn")

from gradclip.app.models import RecurrentModel, build_model  # noqa: E402
from gradclip.app.tasks.text.features import COUNT_LIMIT, ngram_codes, normalise  # noqa: E402
from gradclip.app.tasks.text.model import (  # noqa: E402
    WideDeepModel,
    pack_inputs,
    split_inputs,
)
from gradclip.app.tasks.text.task import TextTask  # noqa: E402

ARCH = dict(cell="gru", hidden_size=8, layers=1, bidirectional=True, dropout=0.0, embed_dim=8)


def test_packed_inputs_split_back_into_tokens_and_codes():
    tokens = torch.tensor([[5, 6, 0], [7, 8, 9]])
    codes = torch.tensor([[3 * COUNT_LIMIT + 1, -1], [4 * COUNT_LIMIT + 2, 0 * COUNT_LIMIT + 1]])
    got_tokens, got_codes = split_inputs(pack_inputs(tokens, codes))
    assert torch.equal(got_tokens, tokens) and torch.equal(got_codes, codes)


def test_ngram_codes_are_deterministic_and_normalised_text_masks_urls():
    texts = ["Hello http://example.com from 10.0.0.1 sooooo", "x"]
    assert ngram_codes(texts, 2**10) == ngram_codes(texts, 2**10)
    assert normalise(texts[0]) == "hello  urladdr  from  ipaddr  soo"
    assert all(code % COUNT_LIMIT >= 1 for row in ngram_codes(texts, 2**10) for code in row)


def test_padding_never_changes_the_wide_and_deep_output():
    torch.manual_seed(0)
    model = WideDeepModel("gru", 3, vocab_size=20, pad_id=0, buckets=64, embed_dim=4,
                          hidden_size=4).eval()
    torch.nn.init.normal_(model.wide.weight)
    tokens, codes = torch.tensor([[4, 5, 6]]), torch.tensor([[2 * COUNT_LIMIT + 1]])
    alone = model(pack_inputs(tokens, codes), torch.tensor([3]))
    padded = model(pack_inputs(torch.tensor([[4, 5, 6, 0, 0], [1, 2, 3, 4, 5]]),
                               torch.tensor([[2 * COUNT_LIMIT + 1, -1], [5, 9 * COUNT_LIMIT + 2]])),
                   torch.tensor([3, 5]))
    torch.testing.assert_close(padded[:1], alone)


def test_the_wide_path_has_its_own_optimizer_group():
    model = WideDeepModel("gru", 2, vocab_size=20, pad_id=0, buckets=64, wide_lr_scale=100.0,
                          wide_eps=0.01)
    rest, wide = model.parameter_groups(0.002)
    assert wide["params"] == [model.wide.weight] and wide["lr"] == pytest.approx(0.2)
    assert (wide["eps"], wide["weight_decay"]) == (0.01, 0.0)
    assert len(rest["params"]) + 1 == len(list(model.parameters()))


def test_the_wide_intercept_has_its_own_rate_and_no_weight_decay():
    model = WideDeepModel("gru", 2, vocab_size=20, pad_id=0, buckets=64, wide_lr_scale=100.0,
                          wide_eps=0.01, wide_intercept=torch.zeros(2), wide_bias_lr_scale=30.0)
    rest, wide, intercept = model.parameter_groups(0.002)
    assert intercept["params"] == [model.wide_bias]
    assert intercept["lr"] == pytest.approx(0.06) and intercept["weight_decay"] == 0.0
    assert all(p is not model.wide_bias and p is not model.wide.weight for p in rest["params"])
    assert len(rest["params"]) + 2 == len(list(model.parameters()))


class _Tokenizer:
    def get_vocab_size(self):
        return 50

    def token_to_id(self, token):
        return 0


def test_a_run_from_before_the_wide_path_keeps_the_plain_recurrent_model():
    old_settings = {"name": "text", "vocab_size": 50, "max_len": 16, "val_fraction": 0.1,
                    "batch_size": 8, "class_balance": "sqrt", "labels": ["toxic"],
                    "pos_weight": [1.0], "seed": 0, "data": "x.csv"}
    old = TextTask(old_settings, _Tokenizer(), ("toxic",))
    assert type(build_model(old, **ARCH)) is RecurrentModel
    new = TextTask({**old_settings, "ngram_buckets": 64, "spatial_dropout": 0.1,
                    "wide_lr_scale": 10.0, "wide_eps": 0.01}, _Tokenizer(), ("toxic",))
    assert type(build_model(new, **ARCH)) is WideDeepModel


def _two_path_model(**settings):
    torch.manual_seed(0)
    model = WideDeepModel("gru", 2, vocab_size=20, pad_id=0, buckets=64, embed_dim=4,
                          hidden_size=4, **settings)
    torch.nn.init.normal_(model.wide.weight)
    inputs = pack_inputs(torch.tensor([[4, 5, 6], [7, 8, 0]]),
                         torch.tensor([[2 * COUNT_LIMIT + 1, 9 * COUNT_LIMIT + 3],
                                       [5 * COUNT_LIMIT + 1, -1]]))
    return model, inputs, torch.tensor([3, 2])


def test_separate_losses_train_both_paths_and_score_their_blend():
    model, inputs, lengths = _two_path_model(wide_intercept=torch.tensor([-1.0, 0.5]),
                                             separate_losses=True, deep_weight=0.2)
    training = model.train()(inputs, lengths)
    assert training.shape == (2, 4)
    model.eval()
    tokens, codes = split_inputs(inputs)
    wide, deep = model.wide_logits(codes), model.deep(tokens, lengths)
    buckets, weights = model.ngram_weights(codes)
    torch.testing.assert_close(wide, model.wide(buckets, per_sample_weights=weights)
                               + torch.tensor([-1.0, 0.5]))
    torch.testing.assert_close(model(inputs, lengths), wide + 0.2 * deep)


def test_a_first_wide_and_deep_run_keeps_its_joint_sum_and_state_keys():
    model, inputs, lengths = _two_path_model()
    assert model.wide_bias is None and "wide_bias" not in model.state_dict()
    tokens, codes = split_inputs(inputs)
    for mode in (model.train, model.eval):
        mode()
        torch.manual_seed(1)
        got = model(inputs, lengths)
        torch.manual_seed(1)
        torch.testing.assert_close(got, model.deep(tokens, lengths) + model.wide_logits(codes))
