"""Fuzzing the readers of a run folder: a loaded run or one ``UserError`` line, nothing else.

A seeded mutator damages the files of a real run thousands of times (bytes flipped, inserted
or cut, the file truncated, values of the checkpoint replaced by others of any type or shape)
and reads each result with ``load_checkpoint`` (and ``Trainer.load``, which checks it against
the model before loading), ``read_config`` (and the task it names) and the ``metrics.jsonl``
reader. Any other exception is a bug in gradclip.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from gradclip.app.errors import UserError
from gradclip.app.training.checkpoint import CHECKPOINT, load_checkpoint
from gradclip.app.training.metrics_log import read_metrics, truncate_after
from gradclip.app.training.runs import read_config, rebuild_task
from gradclip.app.training.trainer import Trainer

SMALL = ["--task", "adding", "--seq-len", "6", "--hidden-size", "8", "--batch-size", "8",
         "--device", "cpu", "--progress", "never", "--optimizer", "adam"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from gradclip.app.cli import main

    folder = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(["train", *SMALL, "--steps", "3", "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def trainer(run_dir) -> Trainer:
    config = read_config(run_dir)
    return Trainer(run_dir, config, rebuild_task(config, run_dir))


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one random kind of damage."""
    kind = rng.randrange(5)
    at = rng.randrange(len(data))
    if kind == 0:  # flip a few bytes
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
        return bytes(out)
    if kind == 1:  # truncated
        return data[:at]
    if kind == 2:  # random bytes inserted
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[at:]
    if kind == 3:  # a span cut out
        return data[:at] + data[at + rng.randint(1, 64):]
    return data[:at] + rng.choice([b"9" * 5000, b"[" * 3000, b"\xff\xfe", b"-1", b"1e999",
                                   b"true", b"null", b'"x"', b"{}"]) + data[at:]


def read_or_refuse(read) -> str:
    """``"read"`` or ``"refused"``: the only outcomes allowed."""
    try:
        read()
    except UserError as error:
        assert "\n" not in str(error), str(error)
        return "refused"
    return "read"


def test_mutated_checkpoint_bytes_load_or_are_one_line(run_dir, trainer, tmp_path):
    rng, original = random.Random(29), (run_dir / CHECKPOINT).read_bytes()
    (tmp_path / "config.json").write_bytes((run_dir / "config.json").read_bytes())
    outcomes = []
    for _ in range(1200):
        (tmp_path / CHECKPOINT).write_bytes(mutated(original, rng))
        outcomes.append(read_or_refuse(lambda: trainer.load(load_checkpoint(tmp_path))))
    assert outcomes.count("refused") > 100  # the mutator did damage


def random_value(rng: random.Random):
    return rng.choice([
        -5, 0, 2**70, True, None, "x", 1.5, float("nan"), [], {}, [1, 2], {"a": 1},
        (3, (1, 2), None), torch.zeros(3), torch.zeros(8, 2), torch.zeros(10, dtype=torch.uint8),
        torch.zeros(()), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 8).double()])


def leaves(value, path=()):
    """Every (path, value) inside nested dicts, lists and tuples (containers included)."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list | tuple) and len(value) < 50:  # not the 625 ints of an RNG
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))


def replaced(state, path, value):
    """A copy of ``state`` with the value at ``path`` replaced (tuples rebuilt)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(state, tuple):
        items = list(state)
        items[head] = replaced(items[head], rest, value)
        return tuple(items)
    out = copy.copy(state)
    out[head] = replaced(state[head], rest, value)
    return out


def test_checkpoint_values_replaced_by_any_other_load_or_are_one_line(run_dir, trainer,
                                                                      tmp_path):
    rng = random.Random(2929)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    places = [path for path, _ in leaves(state) if path]
    outcomes = []
    for _ in range(250):
        path = rng.choice(places)
        torch.save(replaced(state, path, random_value(rng)), tmp_path / CHECKPOINT)
        outcomes.append(read_or_refuse(lambda: trainer.load(load_checkpoint(tmp_path))))
    assert outcomes.count("refused") > 120


def test_mutated_config_is_read_or_one_line(run_dir, tmp_path):
    rng, original = random.Random(2930), (run_dir / "config.json").read_bytes()
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)

    def read():
        config = read_config(target)
        rebuild_task(config, target, training=False)

    outcomes = []
    for _ in range(2000):
        (target / "config.json").write_bytes(mutated(original, rng))
        outcomes.append(read_or_refuse(read))
    assert outcomes.count("refused") > 500


def test_mutated_metrics_log_is_read_or_one_line(run_dir, tmp_path):
    rng, original = random.Random(2931), (run_dir / "metrics.jsonl").read_bytes()
    target = tmp_path / "run"
    target.mkdir()
    for _ in range(800):
        damaged = mutated(original, rng)
        (target / "metrics.jsonl").write_bytes(damaged)
        records = read_metrics(target, warn=False)
        assert all(isinstance(record["step"], int) and record["step"] >= 1 for record in records)
        steps = [record["step"] for record in records]
        assert steps == sorted(set(steps))
        repair = truncate_after(target / "metrics.jsonl", 3)
        assert repair.kept + repair.missing == 3
    lines = [json.loads(line) for line in (target / "metrics.jsonl").read_text().splitlines()]
    assert all(1 <= line["step"] <= 3 for line in lines)
