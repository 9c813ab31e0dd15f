"""Run directory and checkpoint files: atomic writes, a log consistent with the checkpoint."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gradclip.app.errors import UserError
from gradclip.app.training.checkpoint import (
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from gradclip.app.training.loggers import MetricsLogger
from gradclip.app.training.metrics_log import read_metrics
from gradclip.app.training.rundir import json_safe
from gradclip.app.training.runs import read_config


def test_resumed_log_drops_records_after_the_checkpointed_step_and_torn_lines(tmp_path):
    lines = [json.dumps({"step": step, "loss": 0.5}) for step in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')
    log = MetricsLogger(tmp_path)
    log.start(3, 10)
    log.log_step({"step": 4, "loss": 0.25}, torch.nn.Linear(1, 1))
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 0.5), (2, 0.5), (3, 0.5), (4, 0.25)]


def test_checkpoint_round_trip_leaves_no_temporary_file(tmp_path):
    save_checkpoint(tmp_path, {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {},
                               "clipper": {}, "step": 7, "next_batch_index": 7,
                               "counters": {"step": 7}, "rng": rng_states()})
    assert load_checkpoint(tmp_path)["step"] == 7
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04truncated"])
def test_unreadable_checkpoint_is_a_user_error(tmp_path, content):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(UserError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_of_something_else_is_a_user_error(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="not a gradclip checkpoint"):
        load_checkpoint(tmp_path)


def test_config_with_bad_json_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config(tmp_path)


def test_restored_rng_states_replay_the_same_draws():
    states = rng_states()
    first = (torch.rand(3), random.random())
    restore_rng_states(states)
    assert torch.equal(torch.rand(3), first[0]) and random.random() == first[1]


def test_non_finite_numbers_are_written_as_strings_so_the_log_stays_valid_json():
    assert json_safe({"loss": float("nan"), "norms": [float("inf"), 1.0]}) == {
        "loss": "nan", "norms": ["inf", 1.0]}
