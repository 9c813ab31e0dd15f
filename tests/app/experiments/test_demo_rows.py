"""The demo's rows: what demo.json stores is what the table prints."""

from __future__ import annotations

import json
import math

from gradclip.app.experiments.demo import format_table, summary_rows
from gradclip.app.training.rundir import json_safe


def result(strategy, seed, mse, nan_step=None):
    summary = {"eval": {"mse": mse}, "success": mse < 0.01, "max_grad_norm": 3.0,
               "nonfinite_loss_steps": int(nan_step is not None),
               "first_nonfinite_step": nan_step, "seconds": 1.0, "step": nan_step or 40}
    return {"strategy": strategy, "seed": seed, "summary": summary,
            "val_mse": [(20, mse)]}


def test_a_run_without_a_finite_mse_is_null_in_demo_json_and_nan_in_the_table():
    results = [result("none", 0, math.inf, 7), result("none", 1, math.nan, 9),
               result("norm:1.0", 0, 0.004), result("norm:1.0", 1, math.inf, 30)]
    rows = summary_rows(results, ("none", "norm:1.0"))
    stored = json.loads(json.dumps(json_safe(rows), allow_nan=False))
    assert [row["final_mse"] for row in stored] == [[None, None], [0.004, None]]
    lines = format_table(rows).splitlines()[2:]
    assert lines[0].split()[:2] == ["none", "NaN"]
    assert lines[1].split()[:4] == ["norm:1.0", "NaN", "in", "1"]
