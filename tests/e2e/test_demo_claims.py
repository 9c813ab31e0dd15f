"""What the docs say about `gradclip demo` holds on the machine running the tests.

The published table (docs/generated/demo/) comes from one machine: its step numbers and MSEs
are that machine's, since float kernels differ between CPUs and the unclipped runs are chaotic.
What docs/application.md states in words must hold everywhere: every unclipped run diverges,
and `norm:1.0` learns the task on 3 of 3 seeds. So the demo's own runs of those two strategies
are trained here, with the demo's settings (4,000 steps, seeds 0-2; one session-wide rerun,
about 2 minutes on 2 loaded cores: the unclipped runs stop when they go NaN), and the
statements are checked, not the step numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradclip.app.experiments import demo
from gradclip.app.experiments.demo_setting import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "generated" / "demo" / "demo.json"
CHECKED = ("none", "norm:1.0")
STEPS, SEEDS = 4000, 3  # gradclip demo's defaults, which the published run used


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> dict[str, dict]:
    """The demo's rows for the unclipped and the norm-clipped runs, trained on this machine."""
    out = tmp_path_factory.mktemp("demo")
    results = demo.run_demo(out, STEPS, SEEDS, CHECKED, workers=min(2, os.cpu_count() or 1))
    return {row["strategy"]: row for row in demo.summary_rows(results, CHECKED)}


def test_the_checked_strategies_are_the_demos_own():
    assert set(CHECKED) <= set(STRATEGIES)


def test_every_unclipped_run_diverges(rerun):
    row = rerun["none"]
    assert row["seeds"] == SEEDS
    assert len(row["first_nonfinite_steps"]) == SEEDS, row["first_nonfinite_steps"]
    assert row["learnt"] == 0


def test_norm_clipping_learns_the_task_on_every_seed(rerun):
    row = rerun["norm:1.0"]
    assert row["learnt"] == SEEDS, row["final_mse"]
    assert row["nonfinite_loss_steps"] == 0 and row["steps_done"] == [STEPS] * SEEDS
    assert len(row["reached_at"]) == SEEDS


def test_the_published_run_says_the_same():
    rows = {row["strategy"]: row for row in json.loads(PUBLISHED.read_text(encoding="utf-8"))}
    assert len(rows["none"]["first_nonfinite_steps"]) == rows["none"]["seeds"] == SEEDS
    assert rows["norm:1.0"]["learnt"] == rows["norm:1.0"]["seeds"] == SEEDS
