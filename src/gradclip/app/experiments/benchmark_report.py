"""``report.md`` of a benchmark, written from its ``results.json`` alone.

Sections: in short (the rank groups and the claims' answers, in words), how to read it (the sweep, the fair tuning, the statistics, the formulas), the claims
table, the learning-rate sensitivity with rank groups per task, the sweep table per task (score
with its interval, divergences and spikes at each rate, the variant chosen), the step overhead
when measured, the figures and the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gradclip.app.experiments.benchmark_results import SENSITIVITY_FORMULA, SPIKE_RULE
from gradclip.app.experiments.claims import MEASURE_NAMES


def number(value: float) -> str:
    return f"{value:.4g}"


def interval(pair: Sequence[float]) -> str:
    return f"[{number(pair[0])}, {number(pair[1])}]"


def method(results: dict[str, Any]) -> list[str]:
    """How the numbers were made, in the report's words."""
    return [
        f"Each task runs at a grid of learning rates. Every strategy family trains on "
        f"{len(results['scoring_seeds'])} scoring seed(s) "
        f"({', '.join(map(str, results['scoring_seeds']))}) at every rate. A family with "
        f"variants (`norm:X` and `value:X` at X x 0.25, 1, 4 of the profile's threshold; each "
        f"adaptive strategy at its paper's default and one alternative) first runs every "
        f"variant on the selection seed(s) ({', '.join(map(str, results['selection_seeds']))})"
        f"; the best of them is the one scored. No choice sees a seed it is scored on.", "",
        "Score: the final validation metric, capped at the untrained model's (a diverged run "
        "scores exactly that). A run diverged when its loss became NaN/Inf or its final "
        "validation loss exceeds 10x its first training loss. Every mean comes with a "
        "bootstrap 95 % interval (percentile, 10,000 resamples of the seeds).", "",
        f"{SENSITIVITY_FORMULA}. Lower is better; 0 is the best at every rate.", "",
        f"Spike: {SPIKE_RULE}.", "",
        "Rank groups: the strategy with the lowest sensitivity opens group 1 and every "
        "strategy whose interval overlaps its interval shares that group; then the same on "
        "the rest. Strategies in one group are not separated by this benchmark.", ""]


def claims_table(claims: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| strategy | paper's claim | tested here | effect [95 % CI] | answer |",
             "|---|---|---|---:|---|"]
    for c in claims:
        lines.append(
            f"| {c['strategy']} | {c['paper']}: {c['claim']} | {c['task']}, "
            f"{MEASURE_NAMES[c['measure']]} against `{c['baseline']}` | {number(c['effect'])} "
            f"{interval(c['effect_ci95'])} | {c['answer']} |")
    return lines


def sensitivity_table(entries: Sequence[dict[str, Any]], metric: str) -> list[str]:
    lines = [f"| group | strategy | LR sensitivity [95 % CI] | best rate | {metric} at best "
             "rate [95 % CI] | diverged | spikes per run |", "|---:|---|---:|---:|---:|---:|---:|"]
    for e in sorted(entries, key=lambda e: (e["rank_group"], e["lr_sensitivity"])):
        lines.append(
            f"| {e['rank_group']} | {e['strategy']} | {number(e['lr_sensitivity'])} "
            f"{interval(e['lr_sensitivity_ci95'])} | {e['best_lr']:g} | "
            f"{number(e['best_metric'])} {interval(e['best_metric_ci95'])} | "
            f"{e['diverged']}/{e['runs']} | {e['spikes_mean']:.1f} |")
    return lines


def sweep_table(entries: Sequence[dict[str, Any]], lrs: Sequence[float]) -> list[str]:
    """Strategies by rate: mean score [CI], diverged runs, mean spikes, the variant scored."""
    lines = ["| strategy | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
             "|---|" + "---:|" * len(lrs)]
    for strategy in dict.fromkeys(e["strategy"] for e in entries):
        cells = []
        for lr in lrs:
            e = next((e for e in entries if e["strategy"] == strategy and e["lr"] == lr), None)
            if e is None:
                cells.append("—")
                continue
            cells.append(f"{number(e['metric_mean'])} {interval(e['metric_ci95'])}; "
                         f"{e['diverged']}/{len(e['seeds'])} div; {e['spikes_mean']:.1f} spikes"
                         + ("" if e["spec"] == strategy else f"; `{e['spec']}`"))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def task_section(results: dict[str, Any], task: dict[str, Any]) -> list[str]:
    name = task["task"]
    sensitivity = [e for e in results["sensitivity"] if e["task"] == name]
    sweep = [e for e in results["sweep"] if e["task"] == name]
    t = task["thresholds"]
    lines = [f"### {name}", "", f"{task['description']}; metric: {task['metric']} "
             f"({'higher' if task['higher_is_better'] else 'lower'} is better), untrained "
             f"{number(task['initial_metric'])}. Profile thresholds ({t['note']}): norm "
             f"{'none' if t['norm'] is None else format(t['norm'], '.3g')}, value "
             f"{'none' if t['value'] is None else format(t['value'], '.3g')}.", ""]
    lines += sensitivity_table(sensitivity, task["metric"]) + [""]
    if not any(e["rank_group"] > 1 for e in sensitivity):
        lines += ["Nothing separates the strategies on this task: every interval overlaps the "
                  "best one's.", ""]
    lines += ["Final score at each rate: mean [95 % CI]; runs diverged; spikes per run; the "
              "variant scored where the family has several.", ""]
    lines += sweep_table(sweep, task["lrs"]) + [""]
    return lines


def step_overhead_section(overhead: dict[str, Any] | None) -> list[str]:
    if not overhead:
        return ["## Step overhead", "", "Not measured in this report. Each strategy's cost "
                "per training step is measured interleaved in one process by "
                "`python -m benchmarks.step` (the wall time of runs trained in parallel on a "
                "shared machine measures its load, not the strategy).", ""]
    lines = ["## Step overhead", "",
             f"Measured by `{overhead['command']}` ({overhead['note']}): each strategy's step "
             "against the same step without clipping, interleaved in one process.", "",
             "| strategy | step overhead |", "|---|---:|"]
    lines += [f"| {name} | {value:+.1%} |" for name, value in overhead["overhead"].items()]
    return lines + [""]


def task_in_short(results: dict[str, Any], task: dict[str, Any]) -> str:
    """One line: who leads the task's sensitivity ranking, where ``none`` lands, and whether
    any run at any rate diverged (a grid with no divergence tests stability only weakly)."""
    entries = sorted((e for e in results["sensitivity"] if e["task"] == task["task"]),
                     key=lambda e: (e["rank_group"], e["lr_sensitivity"]))
    groups = max(e["rank_group"] for e in entries)
    if groups == 1:
        return f"- **{task['task']}**: nothing separates the strategies (one rank group)."
    first = [f"`{e['strategy']}`" for e in entries if e["rank_group"] == 1]
    line = f"- **{task['task']}**: the least sensitive to the learning rate: {', '.join(first)}"
    unclipped = next((e for e in entries if e["strategy"] == "none"), None)
    if unclipped is not None:
        beside = sum(e["rank_group"] == unclipped["rank_group"] for e in entries) - 1
        company = f"with {beside} other strategies" if beside else "alone"
        line += f"; `none` {company} in group {unclipped['rank_group']} of {groups}"
    if not any(e["diverged"] for e in entries):
        line += ("; no run diverged at any rate, so the grid tests how well each strategy "
                 "learns, not whether it keeps training alive")
    return line + "."


def in_short(results: dict[str, Any]) -> list[str]:
    """The report's findings in words, generated like every number of it."""
    lines = ["## In short", ""]
    lines += [task_in_short(results, task) for task in results["tasks"]]
    answers: dict[str, list[str]] = {}
    for claim in results["claims"]:
        answers.setdefault(claim["answer"], []).append(f"`{claim['strategy']}`")
    told = "; ".join(f"{answer}: {', '.join(names)}" for answer, names in answers.items())
    lines += [f"- **Claims** ({len(results['claims'])}): {told}."]
    return lines + [""]


def report(results: dict[str, Any], figures: Sequence[str]) -> str:
    """The whole ``report.md``."""
    lines = [f"# gradclip benchmark: suite {results['suite']}", "",
             f"{results['notes']}. {results['runs']} runs ({results['selection_runs']} for "
             f"selection); this invocation took {results['elapsed_seconds']:.0f} s (runs "
             "finished earlier are kept).", ""]
    lines += in_short(results)
    lines += ["## How to read it", ""] + method(results)
    lines += ["## Claims", ""] + claims_table(results["claims"]) + [""]
    lines += ["## Learning-rate sensitivity and sweeps", ""]
    for task in results["tasks"]:
        lines += task_section(results, task)
    lines += step_overhead_section(results.get("step_overhead"))
    if results.get("left_out"):
        lines += [f"Not in this installation, left out: {', '.join(results['left_out'])}.", ""]
    lines += [f"![{name.rsplit('.', 1)[0]}]({name})" for name in figures]
    lines += ["", "Reproduce with:", "", f"    {results['command']}", "",
              results["versions"], ""]
    return "\n".join(lines)


def summary_text(results: dict[str, Any]) -> str:
    """The console summary: each task's rank groups by sensitivity, then the claims."""
    lines = []
    for task in results["tasks"]:
        entries = [e for e in results["sensitivity"] if e["task"] == task["task"]]
        groups: dict[int, list[str]] = {}
        for e in sorted(entries, key=lambda e: e["lr_sensitivity"]):
            groups.setdefault(e["rank_group"], []).append(e["strategy"])
        shown = "; ".join(f"group {g}: {', '.join(names)}" for g, names in sorted(groups.items()))
        lines.append(f"{task['task']}: LR sensitivity {shown}")
    lines += [f"claim {c['strategy']} ({c['paper']}): {c['answer']}, effect "
              f"{number(c['effect'])} {interval(c['effect_ci95'])}" for c in results["claims"]]
    return "\n".join(lines)
