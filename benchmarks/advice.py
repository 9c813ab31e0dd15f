"""Does ``gradclip profile``'s advice hold? Its recommendations trained on 3 seeds, per setting.

    python -m benchmarks.advice [--seeds 3] [--tasks readme,adding-rnn,lm-transformer,...]
                                [--lr RATE] [--benchmark results.json]
                                [--data toxic_comments.csv] [--out runs/advice] [--json PATH]
                                [--markdown PATH]

For each setting (the README's adding problem, T=10, vanilla RNN, SGD lr 0.15, 3,000 steps at
a constant lr; then the quick benchmark suite's settings by label, ``gradclip benchmark
--suite quick``, at ``--lr`` or the setting's reference rate), it profiles the first steps
unclipped (seed 0, as ``gradclip profile`` does), takes the recommendation, and trains every
recommended spec, and the specs the profile left out that have a measured threshold
(``norm:X``, ``spikeskip+norm:X``), on each seed. With ``--benchmark``, each spec's mean
capped score is also checked against the best strategy's bootstrap interval at that rate in
the benchmark's ``results.json``.
A row: the setting, the spec, whether the profile recommended it, success (the task's own
criterion) and divergence over the seeds, the final metric, and the run-level verdict of
``gradclip.monitor.diagnosis`` (most common over the seeds). Runs are ordinary run folders
under ``--out``; a rerun trains only what did not finish. One run at a time, one thread.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, write_json
from gradclip.app.config import ModelConfig, TaskOptions, TrainConfig
from gradclip.app.experiments import compare
from gradclip.app.experiments.benchmark import (
    SUITES,
    TaskSetting,
    is_known,
    safe,
    settings_for,
)
from gradclip.app.experiments.diagnosis import diagnose_result
from gradclip.app.experiments.profile import measure, recommend
from gradclip.app.experiments.sweep_stats import capped_score
from gradclip.app.tasks import task_class
from gradclip.app.training.loggers import MetricsLogger
from gradclip.app.training.metrics_log import number
from gradclip.app.training.rundir import remove_folder
from gradclip.app.training.runs import NewRun

README = TaskSetting(
    "readme", "README: adding T=10, rnn 64, SGD lr 0.15 constant, 3,000 steps",
    TaskOptions("adding", 0, 64, seq_len=10), ModelConfig(hidden_size=64),
    TrainConfig(lr=0.15, optimizer="sgd", momentum=0.9, total_steps=3000, batch_size=64,
                device="cpu", threads=1, checkpoint_every=0, eval_every=0, log_every=50),
    lrs=(0.15,), profile_steps=300)


def settings(names: list[str], data: Path | None) -> dict[str, TaskSetting]:
    """``readme`` and the quick suite's settings, by label."""
    found = {"readme": README}
    found.update({s.label: s for s in settings_for(SUITES["quick"], data)})
    return {name: found[name] for name in names}


def profile(setting: TaskSetting, lr: float, folder: Path) -> Any:
    """The unclipped profile of seed 0 at ``lr`` and ``gradclip profile``'s recommendation."""
    remove_folder(folder)
    train = dataclasses.replace(setting.train, clip="none", total_steps=setting.profile_steps,
                                epochs=None, log_every=0, eval_every=0, lr=lr)
    _, _, measured = measure(NewRun(setting.options, setting.model, train, folder),
                             [MetricsLogger(folder)])
    return recommend(measured, 90.0, 99.0)


def candidates(recommendation: Any) -> list[tuple[str, bool]]:
    """Every recommended spec, then the left-out specs with a measured threshold."""
    chosen = [(spec, True) for spec in recommendation.specs]
    norm = next(spec for spec, _ in recommendation.not_recommended + tuple(
        (s, "") for s in recommendation.specs) if spec.startswith("norm:"))
    extra = [norm, f"spikeskip+{norm}"]
    chosen += [(spec, False) for spec in extra
               if spec not in recommendation.specs and is_known(spec)]
    return chosen


def outcome_row(name: str, setting: TaskSetting, spec: str, recommended: bool,
                runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One spec's outcome over the seeds."""
    kind = task_class(setting.options.name)
    metric = [number((r["summary"].get("eval") or {}).get(kind.metric_name))
              for r in runs]
    verdicts = [diagnose_result(r)[0].kind for r in runs]
    common, count = collections.Counter(verdicts).most_common(1)[0]
    criterion = runs[0]["summary"].get("success_criterion")
    return {"setting": name, "label": setting.label, "spec": spec, "recommended": recommended,
            "seeds": len(runs),
            "success": sum(bool(r["summary"].get("success")) for r in runs) if criterion
            else None,
            "diverged": sum(compare.diverged(r) for r in runs),
            "metric_name": kind.metric_name, "metric": metric,
            "verdict": f"{common} {count}/{len(runs)}", "verdicts": verdicts}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | spec | recommended | success | diverged | final metric (mean ± sd) "
             "| run verdict | within the best's interval |", "|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        success = "—" if r["success"] is None else f"{r['success']}/{r['seeds']}"
        within = "—" if "within_best" not in r else (
            f"{'yes' if r['within_best'] else 'no'} ({r['capped_mean']:.4g} vs "
            f"{r['best']['strategy']} [{r['best']['metric_ci95'][0]:.4g}, "
            f"{r['best']['metric_ci95'][1]:.4g}])")
        lines.append(f"| {r['setting']} | {r['spec']} | {'yes' if r['recommended'] else 'no'} "
                     f"| {success} | {r['diverged']}/{r['seeds']} | {r['metric_name']} "
                     f"{compare.mean_std(r['metric'])} | {r['verdict']} | {within} |")
    return "\n".join(lines)


def holds(rows: list[dict[str, Any]]) -> bool:
    """The goal: every recommended spec succeeds on >= 2/3 of the seeds (where the task has a
    criterion), diverges on none, and (when checked) is within the best strategy's interval."""
    return all(r["diverged"] == 0 and (r["success"] is None
                                      or r["success"] >= math.ceil(2 * r["seeds"] / 3))
               and r.get("within_best", True) for r in rows if r["recommended"])


def best_interval(results: dict[str, Any], task: str, lr: float) -> dict[str, Any] | None:
    """The benchmark's best sweep entry of ``task`` at ``lr`` (its mean and interval)."""
    spec = next((t for t in results["tasks"] if t["task"] == task), None)
    entries = [e for e in results["sweep"] if e["task"] == task and e["lr"] == lr]
    if spec is None or not entries:
        return None
    pick = max if spec["higher_is_better"] else min
    best = pick(entries, key=lambda e: e["metric_mean"])
    return {"strategy": best["strategy"], "metric_mean": best["metric_mean"],
            "metric_ci95": best["metric_ci95"], "initial_metric": spec["initial_metric"],
            "higher_is_better": spec["higher_is_better"]}


def against_best(row: dict[str, Any], runs: list[dict[str, Any]], best: dict[str, Any]) -> None:
    """Add the row's mean capped score and whether it is no worse than the best's interval."""
    higher = best["higher_is_better"]
    scores = [capped_score(m, compare.diverged(r), best["initial_metric"], higher)
              for m, r in zip(row["metric"], runs, strict=True)]
    mean = statistics.fmean(scores)
    low, high = best["metric_ci95"]
    row.update(capped_mean=mean, best=best,
               within_best=bool(mean >= low if higher else mean <= high))


def advice_markdown(result: dict[str, Any]) -> str:
    """What each profile found and recommended, the outcome table, and whether it holds."""
    lines = [f"- `{name}` at lr {found['lr']:g}: the unclipped profile ({found['kept_steps']} "
             f"steps kept) was *{found['regime']}*; recommended: "
             + ", ".join(f"`{spec}`" for spec in found["specs"])
             for name, found in result["advice"].items()]
    verdict = "holds" if result["holds"] else "does not hold"
    lines += ["", table(result["rows"]), "",
              f"Every recommended spec succeeded on at least 2/3 of the seeds (where the task "
              f"has a criterion), diverged on none and (where the benchmark has the rate) "
              f"scored within the best strategy's interval: **{verdict}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", default="readme,adding-rnn,temporal-order-rnn,lm-rnn")
    parser.add_argument("--lr", type=float, default=None,
                        help="the rate of every setting (default: each one's reference rate)")
    parser.add_argument("--benchmark", type=Path, default=None,
                        help="a benchmark's results.json: check each spec against the best "
                             "strategy's interval at the same rate")
    parser.add_argument("--out", type=Path, default=Path("runs/advice"))
    parser.add_argument("--data", type=Path, default=None,
                        help="the toxic-comment CSV (the transformer's text)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the profiles, the table and the verdict as Markdown "
                             "(what the docs include)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    published = json.loads(args.benchmark.read_text()) if args.benchmark else None
    rows, advice = [], {}
    for name, setting in settings(args.tasks.split(","), args.data).items():
        lr = args.lr or setting.reference_lr
        recommendation = profile(setting, lr, args.out / "profiles" / name)
        advice[name] = {"specs": list(recommendation.specs), "regime": recommendation.regime,
                        "norm_threshold": recommendation.norm_threshold,
                        "kept_steps": recommendation.kept_steps, "lr": lr}
        print(f"{name} at lr {lr:g}: {recommendation}  (regime {recommendation.regime})",
              flush=True)
        specs = candidates(recommendation)
        points = [((spec, chosen), setting.run(spec, lr, seed, args.out / "runs" / name
                                               / f"{safe(spec)}-seed{seed}"))
                  for spec, chosen in specs for seed in range(args.seeds)]
        grouped = compare.run_grid(points, specs, jobs=1, reuse_finished=True)
        best = best_interval(published, name, lr) if published else None
        for (spec, chosen), runs in grouped.items():
            rows.append(outcome_row(name, setting, spec, chosen, runs))
            if best is not None:
                against_best(rows[-1], runs, best)
        print(table([r for r in rows if r["setting"] == name]), flush=True)
    print("\n" + table(rows))
    verdict = holds(rows)
    print(f"\nevery recommended spec succeeded on >= 2/3 seeds, diverged on none and (with "
          f"--benchmark) scored within the best strategy's interval: {verdict} "
          f"({time.perf_counter() - started:.0f} s)")
    result = {"machine": machine(), "seeds": args.seeds, "advice": advice, "rows": rows,
              "holds": verdict,
              "median_metric": {f"{r['setting']} {r['spec']}": statistics.median(
                  [v for v in r["metric"] if math.isfinite(v)] or [math.nan]) for r in rows}}
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        args.markdown.write_text(advice_markdown(result), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
