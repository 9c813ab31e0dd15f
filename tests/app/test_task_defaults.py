"""Task-aware defaults: each task's recommended settings fill the flags the user left out."""

from __future__ import annotations

import argparse

import pytest

from gradclip.app.commands import options, train
from gradclip.app.config import FLAG_DEFAULTS, MODEL_RECOMMENDED, RECOMMENDED

# What every flag defaulted to before tasks had defaults of their own: the synthetic tasks
# (the demo, the Pascanu reproduction, the benchmark) must keep exactly these.
BEFORE = {"model": "rnn", "hidden_size": 64, "layers": 1, "bidirectional": False,
          "dropout": 0.0, "embed_dim": 128, "clip": "norm:1.0", "optimizer": "sgd",
          "lr": 0.05, "weight_decay": 0.0, "schedule": "constant", "epochs": None,
          "threads": 1, "heads": None, "seq_len": None, "batch_size": 64, "warmup_steps": 0,
          "min_lr_ratio": 0.0}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize("task", ["adding", "temporal-order", "lm"])
def test_synthetic_tasks_keep_the_flag_defaults_of_before(task):
    assert FLAG_DEFAULTS == BEFORE
    assert task not in RECOMMENDED
    assert options.resolve_task_defaults(parse("--task", task)) == BEFORE


def test_the_text_task_gets_its_recommended_settings():
    resolved = options.resolve_task_defaults(parse("--task", "text", "--data", "x.csv"))
    assert resolved == {**BEFORE, **RECOMMENDED["text"]}
    assert resolved["model"] == "gru" and resolved["bidirectional"] is True
    assert resolved["optimizer"] == "adamw"


def test_explicit_flags_override_the_task_defaults():
    args = parse("--task", "text", "--data", "x.csv", "--model", "lstm", "--no-bidirectional",
                 "--lr", "0.01", "--optimizer", "sgd", "--clip", "none", "--threads", "1",
                 "--hidden-size", "64", "--epochs", "2")
    resolved = options.resolve_task_defaults(args)
    assert (resolved["model"], resolved["bidirectional"], resolved["lr"]) == ("lstm", False, 0.01)
    assert (resolved["optimizer"], resolved["clip"], resolved["threads"]) == ("sgd", "none", 1)
    assert (resolved["hidden_size"], resolved["epochs"]) == (64, 2.0)
    # a flag given with the global default's value still wins over the task's
    assert options.resolve_task_defaults(
        parse("--task", "text", "--data", "x.csv", "--model", "rnn"))["model"] == "rnn"


def test_new_run_records_the_resolved_values():
    new = options.new_run(parse("--task", "text", "--data", "x.csv", "--lr", "0.003"))
    assert new.model.cell == "gru" and new.model.bidirectional
    assert new.train.optimizer == "adamw" and new.train.lr == 0.003
    assert new.train.schedule == "cosine" and new.train.epochs == RECOMMENDED["text"]["epochs"]
    # --steps replaces the task's epochs
    assert options.new_run(parse("--task", "text", "--data", "x.csv", "--steps", "5")
                           ).train.epochs is None
    adding = options.new_run(parse("--task", "adding"))
    assert (adding.model.cell, adding.train.optimizer, adding.train.lr) == ("rnn", "sgd", 0.05)


def test_help_shows_each_tasks_default(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: rnn; --task text: gru)" in text
    assert "(default: sgd; --task text: adamw; --task lm --model transformer: adamw)" in text
    assert "(default: 0; --task lm --model transformer: 100)" in text  # --warmup-steps
    assert "(--task lm --model transformer: 4)" in text  # --heads


def test_the_transformer_gets_nanogpts_cpu_character_settings():
    resolved = options.resolve_task_defaults(parse("--task", "lm", "--model", "transformer"))
    assert resolved == {**BEFORE, **MODEL_RECOMMENDED[("lm", "transformer")],
                        "model": "transformer"}
    assert (resolved["layers"], resolved["heads"], resolved["hidden_size"]) == (4, 4, 128)
    assert (resolved["seq_len"], resolved["batch_size"]) == (64, 12)
    assert (resolved["optimizer"], resolved["lr"], resolved["schedule"]) == (
        "adamw", 1e-3, "cosine")
    assert (resolved["warmup_steps"], resolved["min_lr_ratio"]) == (100, 0.1)
    assert resolved["weight_decay"] == 0.1


def test_the_transformer_defaults_reach_the_run_and_given_flags_win():
    new = options.new_run(parse("--task", "lm", "--model", "transformer", "--lr", "0.01",
                                "--heads", "2"))
    assert (new.model.cell, new.model.heads, new.model.hidden_size) == ("transformer", 2, 128)
    assert (new.train.lr, new.train.warmup_steps, new.train.batch_size) == (0.01, 100, 12)
    assert (new.options.seq_len, new.options.batch_size, new.options.model) == (
        64, 12, "transformer")
    recurrent = options.new_run(parse("--task", "lm"))
    assert (recurrent.model.heads, recurrent.train.warmup_steps) == (0, 0)
    assert (recurrent.options.seq_len, recurrent.options.batch_size) == (None, 64)
