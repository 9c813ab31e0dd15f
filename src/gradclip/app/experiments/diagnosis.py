"""The run-level diagnosis of a finished run folder (``gradclip.monitor.diagnosis`` on its files).

Reads ``metrics.jsonl`` (loss, pre-clip norm, clipped, skipped, per-module norms every
``--log-every`` steps), ``summary.json`` (final validation loss, success), ``config.json``
(cell, optimizer, lr, clip, length: the fixes fit them) and the monitor's last report
(``monitor.json``: the time profiles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradclip.app.config import RunConfig
from gradclip.app.training.metrics_log import number, read_metrics
from gradclip.app.training.runs import read_config
from gradclip.monitor.diagnosis import RunHistory, diagnose_run
from gradclip.monitor.fixes import RunSetting
from gradclip.monitor.verdicts import Verdict


def run_history(records: list[dict[str, Any]], summary: dict[str, Any],
                monitored: dict[str, Any] | None) -> RunHistory:
    """A run's histories from its metrics records, summary and last monitor report."""
    module_norms: dict[str, list[float]] = {}
    for record in records:
        for name, norm in (record.get("layer_grad_norms") or {}).items():
            module_norms.setdefault(name, []).append(number(norm))
    evaluation = summary.get("eval") or {}
    final = evaluation.get("loss")
    return RunHistory(
        losses=[number(r.get("loss")) for r in records],
        grad_norms=[number(r.get("grad_norm")) for r in records],
        clipped=[bool(r.get("clipped")) for r in records],
        skipped=[bool(r.get("skipped")) for r in records],
        module_norms=module_norms,
        time_profiles=(monitored or {}).get("time_profiles") or {},
        final_loss=None if final is None else number(final),
        success=summary.get("success") if summary.get("success_criterion") else None)


def run_setting(config: RunConfig) -> RunSetting:
    """What the advice needs to know of a run's configuration."""
    model, train = config.model, config.train
    return RunSetting(cell=model.cell, optimizer=train.optimizer, lr=train.lr, clip=train.clip,
                      seq_len=config.task.get("seq_len"), layers=model.layers)


def diagnose_result(result: dict[str, Any]) -> list[Verdict]:
    """The run verdicts of one ``compare`` result (``run_dir``, ``summary``, ``monitor``)."""
    run_dir = Path(result["run_dir"])
    records = read_metrics(run_dir)
    if not records:
        return [Verdict("diverged", "the run recorded no step.", "see the run's summary.json")]
    config = read_config(run_dir)  # checked: a kept run's folder may have been edited
    history = run_history(records, result["summary"], result.get("monitor"))
    return diagnose_run(history, run_setting(config))
