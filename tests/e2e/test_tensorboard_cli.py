"""``gradclip train --tensorboard`` writes TensorBoard events (skipped without tensorboard)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from gradclip.app.cli import main  # noqa: E402


def test_train_with_tensorboard_logs_scalars_per_step_and_histograms(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--hidden-size", "8",
                 "--steps", "10", "--log-every", "5", "--progress", "never", "--tensorboard",
                 "--out", str(run_dir)]) == 0
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert len(events.Scalars("train/loss")) == 10
    assert len(events.Scalars("grad/norm_before_clip")) == 10
    assert "grad_norm/head" in tags["scalars"]
    assert any(tag.startswith("grad/") for tag in tags["histograms"])
