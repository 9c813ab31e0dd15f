"""The run verdict of a finished run folder, as ``compare`` and ``benchmarks.advice`` read it."""

from __future__ import annotations

import json
import math

from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.experiments.diagnosis import diagnose_result


def write_run(folder, losses, *, clip="none", cell="rnn", eval_loss=None, success=None):
    folder.mkdir()
    records = [{"step": i + 1, "loss": loss, "grad_norm": 0.3, "threshold": None,
                "clipped": False, "skipped": False, "lr": 0.15}
               for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = RunConfig({"name": "adding", "seq_len": 10, "batch_size": 64, "seed": 0,
                        "validation_size": 1000}, ModelConfig(cell=cell, layers=1),
                       TrainConfig(clip=clip, optimizer="sgd", lr=0.15, total_steps=len(losses)))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    summary = {"eval": {"loss": eval_loss}, "success": success,
               "success_criterion": "validation MSE < 0.01"}
    return {"run_dir": str(folder), "summary": summary, "monitor": None}


def test_a_run_whose_loss_went_nan_is_never_called_healthy(tmp_path):
    losses = [1.0 / (1 + i) for i in range(100)] + [math.nan] * 5
    verdict = diagnose_result(write_run(tmp_path / "r", losses, clip="autoclip:0.1"))[0]
    assert verdict.kind == "diverged"
    assert "autoclip:0.1" in verdict.fix


def test_a_run_that_ended_at_135_times_a_constant_guess_is_diverged(tmp_path):
    losses = [1.0] + [0.17] * 50 + [3.0] * 50
    result = write_run(tmp_path / "r", losses, clip="autoclip:0.1", eval_loss=22.6,
                       success=False)
    assert diagnose_result(result)[0].kind == "diverged"


def test_a_learnt_run_is_healthy_and_an_unlearnt_falling_one_is_learning(tmp_path):
    losses = [0.2 * 0.97 ** i for i in range(200)]
    learnt = write_run(tmp_path / "a", losses, clip="agc:0.01", eval_loss=losses[-1],
                       success=True)
    unlearnt = write_run(tmp_path / "b", losses, clip="norm:1.0", eval_loss=losses[-1],
                         success=False)
    assert [v.kind for v in diagnose_result(learnt)] == ["healthy"]
    assert [v.kind for v in diagnose_result(unlearnt)] == ["learning"]


def test_a_tie_in_compares_verdict_column_goes_to_the_more_severe_verdict(tmp_path):
    from gradclip.app.experiments.compare import Setting, row

    diverged = write_run(tmp_path / "a", [1.0 / (1 + i) for i in range(100)] + [math.nan])
    healthy = write_run(tmp_path / "b", [0.2 * 0.97 ** i for i in range(200)],
                        eval_loss=0.001, success=True)
    for result, steps in ((diverged, 101), (healthy, 200)):
        result["summary"].update({"step": steps, "clipped_steps": 0, "max_grad_norm": 0.3,
                                  "seconds": 1.0, "nonfinite_loss_steps": 0,
                                  "status": "completed"})
    table_row = row(Setting("rnn", 10, 0.15, "none"), [healthy, diverged], "mse")
    assert table_row["verdict"] == "diverged 1/2"
