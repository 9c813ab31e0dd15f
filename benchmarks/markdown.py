"""Markdown tables of the benchmarks' figures, for the pages that publish them.

Each benchmark's ``--markdown FILE`` writes its table here from the same payload it writes
into ``--json``; ``make docs-figures --only performance`` puts them in
``docs/generated/performance/``, which the performance page includes as they are. Every
table says what it was measured on: the command, the threads and the load average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CLIP_ROWS = {  # benchmarks.clip's candidates, as the page names them
    "read_pass": "read pass (`buffer.sum()`)",
    "torch_norm": "`torch.nn.utils.clip_grad_norm_`",
    "gradclip_norm": "`gradclip.clip_grad_norm_`",
    "gradclip_norm_flat": "... flat (bit-identical to torch)",
    "gradclip_norm_flat_fast": "... flat, fast norm",
    "fused_clip": "... fused, flat",
    "fused_clip_fast": "... fused, flat, fast norm",
    "torch_value": "`torch.nn.utils.clip_grad_value_`",
    "gradclip_value": "`gradclip.clip_grad_value_`",
    "gradclip_value_flat": "... flat",
    "fused_step": "fused Adam step (flat)",
    "fused_step_clipped": "fused Adam step with `norm:1.0` in it",
}
CLIP_RATIOS = {  # the ratios the performance targets are stated in
    "gradclip_norm / torch_norm": "drop-in `clip_grad_norm_`: gradclip / torch",
    "gradclip_value / torch_value": "drop-in `clip_grad_value_`: gradclip / torch",
    "torch_norm / gradclip_norm_flat_fast": "torch / flat, fast norm",
    "torch_norm / gradclip_norm_flat": "torch / flat, exact norm",
}


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """A Markdown table; columns from ``right_from`` on are right-aligned (figures)."""
    rule = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def load(values: Sequence[float] | None) -> str:
    return "unknown" if not values else f"{values[0]:.1f}"


def write_markdown(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def clip_tables(payload: Mapping[str, Any]) -> str:
    """``benchmarks.clip``: median ms of every candidate per model, then the target ratios."""
    parts = [f"`{payload['command']}`, {payload['clock']} time, load average "
             f"{load(payload['machine']['load_average'])} at the start, "
             f"{load(payload.get('load_average_end'))} at the end."]
    for threads, by_model in payload["clip"].items():
        models = list(by_model)
        rows = [[label, *(f"{by_model[m]['median_ms'][name]:.2f}" for m in models)]
                for name, label in CLIP_ROWS.items()]
        parts.append(f"Median ms, `torch.set_num_threads({threads.split('=')[1]})`:\n\n"
                     + table(["", *models], rows))
        rows = [[label, *(f"{by_model[m]['ratios'][name]:.2f}" for m in models)]
                for name, label in CLIP_RATIOS.items()]
        parts.append(table([f"ratio ({threads})", *models], rows))
    return "\n\n".join(parts)


def step_table(payload: Mapping[str, Any], specs: Sequence[str]) -> str:
    """``benchmarks.step``: each strategy's overhead on the step, ordinary and flat buffers."""
    parts = [f"`{payload['command']}`, {payload['clock']} time, load average "
             f"{load(payload['machine']['load_average'])} at the start, "
             f"{load(payload.get('load_average_end'))} at the end. Overhead in percent of "
             "the step without clipping: whole step / tail (the clip and the optimizer "
             "step, timed inside each step: less noisy)."]
    for threads, figures in payload.items():
        if not threads.startswith("threads="):
            continue
        whole, tail = figures["overhead_percent"], figures["tail_overhead_percent"]

        def cell(name: str, whole: Mapping[str, float] = whole,
                 tail: Mapping[str, float] = tail) -> str:
            return f"{whole[name]:+.1f} / {tail[name]:+.1f}" if name in whole else "-"

        rows = [[f"`{spec}`", cell(spec), cell(f"{spec} flat")] for spec in specs]
        rows.append(["`norm:1.0`, flat + fused `Adam` (vs fused `Adam`)",
                     cell("norm:1.0 flat+fused"), "-"])
        rows.append(["`GradientMonitor(model, every=1)`", cell("monitor every=1"), "-"])
        parts.append(table([f"strategy ({threads})", "overhead %", "on flat buffers %"], rows)
                     + f"\n\nFlat buffers alone, no clip: {figures['flat_buffers_percent']:+.1f} "
                     "% of the step.")
    return "\n\n".join(parts)


def latency_table(payload: Mapping[str, Any]) -> str:
    """``benchmarks.latency``: clip times and collective counts under a simulated latency."""
    rows = [[f"{row['layout']}, {row['ranks']} ranks", f"{row['latency_ms']:g} ms",
             f"{row['gradclip_median_ms']:.2f} ms", f"{row['torch_median_ms']:.2f} ms",
             f"{row['torch_median_ms'] / row['gradclip_median_ms']:.2f}",
             f"{row['gradclip_collectives']} / {row['torch_collectives']}"]
            for row in payload["rows"]]
    return (f"`{payload['command']}`: {payload['tensors']} DTensor gradients per rank, "
            f"median of {payload['repeats']} calls (wall clock), {payload['threads']} torch "
            f"thread per process, load average {load(payload['load_average_before'])} at the "
            f"start, {load(payload['load_average_after'])} at the end.\n\n"
            + table(["mesh", "latency per collective", "gradclip", "torch", "torch / gradclip",
                     "collectives (gradclip / torch)"], rows))


def contention_table(payload: Mapping[str, Any]) -> str:
    """``benchmarks.contention``: the run alone and beside busy processes, with ratios."""
    alone = payload["rows"][0]
    rows = []
    for row in payload["rows"]:
        name = "alone" if row["beside"] == 0 else f"beside {row['beside']} busy processes"
        ratio = row is not alone
        rows.append([name, f"{load(row['load_average_before'])} → "
                     f"{load(row['load_average_after'])}", str(row["torch_threads"]),
                     seconds(row, alone, "wall_seconds", ratio),
                     seconds(row, alone, "training_seconds", ratio),
                     seconds(row, alone, "cpu_seconds", ratio), f"{row['final_train_loss']:.4f}"])
    return (f"`{payload['command']}`: {payload['steps']} steps of the default text run; "
            "ratios against the run alone (targets: wall ≤ 3x, CPU ≤ 1.5x).\n\n"
            + table(["run", "load at start → end", "torch threads", "wall s", "training s",
                     "CPU s", "final training loss"], rows))


def seconds(row: Mapping[str, Any], alone: Mapping[str, Any], key: str, ratio: bool) -> str:
    value = f"{row[key]:,.1f}"
    return f"{value} ({row[key] / alone[key]:.2f}x)" if ratio else value


def signed(difference: float) -> str:
    """``+0.0012`` or ``−0.0006`` (a typographic minus, as the text page writes it)."""
    return f"{difference:+.4f}".replace("-", "−")


def text_tables(command: str, results: Sequence[Mapping[str, Any]]) -> str:
    """``benchmarks.text``: the default text run against TF-IDF + LR on the unseen rows, per
    seed, then per label (mean of the seeds)."""
    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    rows = []
    for run in results:
        model, baseline = run["model"]["mean_roc_auc"], run["baseline"]["mean_roc_auc"]
        rows.append([str(run["seed"]), f"{model:.4f}", f"{baseline:.4f}",
                     signed(model - baseline),
                     f"{run['validation_mean_roc_auc']:.3f}", f"{run['seconds'] / 60:.1f}",
                     f"{run['clipped_steps']} of {run['steps']}"])
    models = [run["model"]["mean_roc_auc"] for run in results]
    baselines = [run["baseline"]["mean_roc_auc"] for run in results]
    rows.append(["mean", f"**{mean(models):.4f}**", f"{mean(baselines):.4f}",
                 signed(mean(models) - mean(baselines)), "", "", ""])
    per_seed = table(["seed", "default", "TF-IDF + LR", "default − baseline",
                      "validation (800 rows)", "minutes", "steps clipped"], rows)
    labels = results[0]["model"]["per_label"]
    rows = [[label, f"{labels[label]['positives']:,}",
             f"{mean([run['model']['per_label'][label]['roc_auc'] for run in results]):.3f}",
             f"{mean([run['baseline']['per_label'][label]['roc_auc'] for run in results]):.3f}"]
            for label in labels]
    per_label = table(["label", "positives (of 1,000)", f"default (mean of {len(results)})",
                       f"TF-IDF + LR (mean of {len(results)})"], rows)
    return f"`{command}`:\n\n{per_seed}\n\n{per_label}"
