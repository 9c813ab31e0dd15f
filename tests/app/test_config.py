"""The typed run configuration: ``config.json`` round-trips, and hand edits fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.errors import UserError

OLD_RUN = Path(__file__).parent / "training" / "fixtures" / "run-written-by-0.1.0"


def old_config() -> dict:
    return json.loads((OLD_RUN / "config.json").read_text())


def test_config_written_by_0_1_0_parses_and_serialises_to_the_same_json():
    data = old_config()
    config = RunConfig.from_dict(data)
    assert config.model == ModelConfig(hidden_size=8)
    assert config.train.total_steps == 8 and config.train.checkpoint_every == 2
    assert config.to_dict() == data


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("model", "hidden_size", "abc", r"model\.hidden_size must be an integer, got the string 'abc'"),
    ("model", "bidirectional", 1, r"model\.bidirectional must be true or false, got 1"),
    ("train", "lr", None, r"train\.lr must be a number, got null"),
    ("train", "total_steps", 2.5, r"train\.total_steps must be an integer or null, got 2.5"),
])
def test_a_hand_edited_field_of_the_wrong_type_is_named_in_one_line(section, key, value,
                                                                    message):
    data = old_config()
    data[section][key] = value
    with pytest.raises(UserError, match=message):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("model", [None, [], "rnn"])
def test_a_section_that_is_not_an_object_is_a_user_error(model):
    data = old_config() | {"model": model}
    with pytest.raises(UserError, match="model must be an object"):
        RunConfig.from_dict(data)


def test_an_unknown_key_is_a_user_error():
    data = old_config()
    data["train"]["learning_rate"] = 0.1
    with pytest.raises(UserError, match=r"unknown key train\.learning_rate"):
        RunConfig.from_dict(data)


def test_epochs_become_optimizer_steps_over_the_tasks_batches():
    train = TrainConfig(epochs=2.0, accumulate=3)
    assert train.resolved("text", batches_per_epoch=10).total_steps == 7
    assert TrainConfig().resolved("adding", None).total_steps == 2000
    with pytest.raises(UserError, match="--epochs needs a task with a finite data set"):
        train.resolved("adding", None)
    with pytest.raises(UserError, match="not both"):
        TrainConfig(total_steps=5, epochs=1.0).resolved("text", 10)
