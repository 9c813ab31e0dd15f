"""One table of bounds: a flag at parse time and its value read back from config.json agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradclip.app.bounds import BOUNDS, Bound
from gradclip.app.cli import build_parser
from gradclip.app.config import RunConfig
from gradclip.app.errors import UserError

OLD_RUN = Path(__file__).parent / "training" / "fixtures" / "run-written-by-0.1.0"

# flag -> (config.json section, key): the settings a run stores
STORED_FLAGS = {
    "--hidden-size": ("model", "hidden_size"), "--layers": ("model", "layers"),
    "--embed-dim": ("model", "embed_dim"), "--dropout": ("model", "dropout"),
    "--lr": ("train", "lr"), "--momentum": ("train", "momentum"),
    "--weight-decay": ("train", "weight_decay"), "--steps": ("train", "total_steps"),
    "--batch-size": ("train", "batch_size"), "--accumulate": ("train", "accumulate"),
    "--seed": ("train", "seed"), "--threads": ("train", "threads"),
    "--log-every": ("train", "log_every"), "--checkpoint-every": ("train", "checkpoint_every"),
    "--seq-len": ("task", "seq_len"),
}


def outside(bound: Bound) -> list[float]:
    """Values just outside ``bound`` on each side."""
    if bound.kind is int:
        return [int(bound.low) - 1, int(bound.high) + 1]
    return [bound.low if bound.low_open else bound.low - 1,
            bound.high if bound.high_open else bound.high * 2]


def inside(bound: Bound) -> list[float]:
    low = bound.low + (1 if bound.kind is int else 1e-6) if bound.low_open else bound.low
    high = bound.high - (1 if bound.kind is int else 1e-6) if bound.high_open else bound.high
    return [bound.kind(low), bound.kind(high)]


@pytest.mark.parametrize("name", list(BOUNDS))
def test_each_bound_admits_its_edges_and_nothing_beyond(name):
    bound = BOUNDS[name]
    assert all(bound.admits(value) for value in inside(bound))
    assert not any(bound.admits(value) for value in outside(bound))
    assert not bound.admits(True) and not bound.admits("1") and not bound.admits(float("nan"))


@pytest.mark.parametrize("flag", list(STORED_FLAGS))
def test_a_flag_and_its_stored_value_are_refused_by_the_same_bound(flag, capsys):
    section, key = STORED_FLAGS[flag]
    bound = BOUNDS[key]
    value = outside(bound)[1]
    argv = ["train", flag, str(value)]
    with pytest.raises(SystemExit):
        build_parser(argv).parse_args(argv)
    assert f"must be {bound.describe()}" in capsys.readouterr().err
    data = json.loads((OLD_RUN / "config.json").read_text())
    data[section][key] = value
    with pytest.raises(UserError, match=f"{section}.{key} must be") as refused:
        RunConfig.from_dict(data)
    assert bound.describe() in str(refused.value)
