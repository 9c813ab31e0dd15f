"""``gradclip train --clip spikeskip+norm:1.0``: an injected loss spike is skipped and counted."""

from __future__ import annotations

import dataclasses
import json
import math

import torch

from gradclip.app.tasks.synthetic import SyntheticTask
from tests.e2e.cli import run_cli

SPIKE_AT = 30  # the 31st optimizer step's batch (one micro-batch a step)


def test_an_injected_spike_is_skipped_and_counted_in_the_summary(tmp_path, capsys, monkeypatch):
    batch_at = SyntheticTask.train_batch

    def spiking_batch(task, index):
        batch = batch_at(task, index)
        if index == SPIKE_AT:  # targets 1000x off: the loss and the gradient norm spike
            batch = dataclasses.replace(batch, targets=batch.targets * 1000.0)
        return batch

    monkeypatch.setattr(SyntheticTask, "train_batch", spiking_batch)
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        ["train", "--task", "adding", "--seq-len", "10", "--steps", "40", "--clip",
         "spikeskip:window=20,sigma=6+norm:1.0", "--hidden-size", "8", "--batch-size", "8",
         "--threads", "1", "--out", out], capsys)
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records if record["skipped"]] == [SPIKE_AT + 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_steps"] == 1 and summary["status"] == "completed"
    assert json.loads((out / "config.json").read_text())["train"]["clip"].startswith("spikeskip")
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert math.isfinite(summary["final_train_loss"])
