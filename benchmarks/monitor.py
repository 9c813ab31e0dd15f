"""Overhead of ``GradientMonitor`` on a training step of the LSTM text model.

    python -m benchmarks.monitor [--threads 1] [--repeats 20] [--quick] [--json PATH]

One step of the application's text model (``RecurrentModel``: embedding 20,000 x 128 ->
LSTM 64 -> 6 labels, 2.6 M parameters, 10.4 MB of weights; a batch of 64 comments of 128
tokens; Adam), as in ``benchmarks.step``: ``zero_grad``, forward, loss, ``backward``,
``monitor.step()``, ``optimizer.step``. Timed round-robin (process CPU time, medians) with
and without the monitor:

- ``monitor every=1``: ``monitor.step()`` each step (a report each step, not read; the
  time-profile hooks and the weight snapshot for the update/weight ratio every 10th step,
  the defaults of ``profile_every`` and ``update_every``);
- ``monitor every=1, update_every=1``: the update/weight ratio measured every step too;
- ``monitor every=1, everything every step``: ``update_every=1, profile_every=1``;
- ``monitor every=1, read``: the same, and ``str(report)`` each step (one host transfer,
  the verdicts in Python);
- ``monitor every=1, no time profiles``: ``hidden_states=False``;
- ``monitor every=10`` / ``every=50``: a report (and so a snapshot) every N steps;
- ``monitor.step() alone``: the monitor's own work on the model's gradients, no training.

Prints ``torch.get_num_threads()``, the load average, each median and its ratio to the
plain step, and the *tail* ratio: ``1 + (median tail - plain's median tail) / plain's
median step``, where the tail is the part after ``backward()`` (the monitor's step and the
optimizer step), the same cost without the noise of forward and backward on a shared
machine (it leaves out the time-profile hooks, which run inside ``backward()``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from collections.abc import Callable

import torch

import gradclip
from benchmarks.common import interleaved_medians, machine, print_table, write_json
from benchmarks.step import TrainingStep, text_batch, text_model


def read_each(monitor: gradclip.GradientMonitor) -> Callable[[], None]:
    def after_backward() -> None:
        report = monitor.step()
        if report is not None:
            str(report)
    return after_backward


def variants(quick: bool) -> dict[str, Callable[[], object]]:
    """Every timed step by name; each owns a copy of the same model and its optimizer."""
    base, batch = text_model(quick), text_batch(quick)

    def step(monitor_options: dict[str, object] | None, read: bool = False) -> TrainingStep:
        model = copy.deepcopy(base)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if monitor_options is None:
            return TrainingStep(model, optimizer, batch)
        monitor = gradclip.GradientMonitor(model, **monitor_options)
        return TrainingStep(model, optimizer, batch,
                            read_each(monitor) if read else monitor.step)

    options = {
        "monitor every=1": {"every": 1},
        "monitor every=1, update_every=1": {"every": 1, "update_every": 1},
        "monitor every=1, everything every step": {"every": 1, "update_every": 1,
                                                   "profile_every": 1},
        "monitor every=1, no time profiles": {"every": 1, "hidden_states": False},
        "monitor every=10": {"every": 10},
        "monitor every=50": {"every": 50},
    }
    steps: dict[str, Callable[[], object]] = {"plain": step(None)}
    alone = step(None)
    alone()  # leaves gradients in place
    for name, monitor_options in options.items():
        try:  # an older gradclip (for a before/after table) lacks update_every
            steps[name] = step(monitor_options)
            if name == "monitor every=1":
                steps["monitor every=1, read"] = step(monitor_options, read=True)
            steps[name.replace("monitor", "monitor.step() alone", 1)] = \
                gradclip.GradientMonitor(alone.model, **monitor_options).step
        except TypeError:
            print(f"{name}: not in this version of gradclip")
    return steps


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a tiny model (for tests)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch.set_num_threads({args.threads}): torch.get_num_threads() = "
          f"{torch.get_num_threads()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"torch {torch.__version__}")
    steps = variants(args.quick)
    medians = interleaved_medians(steps, args.repeats, warmup=3)
    base = medians["plain"]
    tails = {name: statistics.median(step.tail_times[3:]) for name, step in steps.items()
             if isinstance(step, TrainingStep)}
    tail_ratio = {name: 1 + (tail - tails["plain"]) / base for name, tail in tails.items()}
    rows = [("variant", "median step (ms)", "ratio to plain", "tail ratio")]
    rows += [(name, f"{seconds * 1e3:.2f}", f"{seconds / base:.3f}",
              f"{tail_ratio[name]:.3f}" if name in tail_ratio else "")
             for name, seconds in medians.items()]
    print_table("LSTM text model (2.6 M parameters), batch 64 x 128 tokens, Adam: "
                "training step with the monitor", rows)
    after = os.getloadavg()
    print(f"load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    result = {"machine": machine(), "threads": torch.get_num_threads(),
              "load_average_before": list(load), "load_average_after": list(after),
              "median_ms": {n: round(s * 1e3, 3) for n, s in medians.items()},
              "ratio": {n: round(s / base, 4) for n, s in medians.items()},
              "tail_ratio": {n: round(r, 4) for n, r in tail_ratio.items()}}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
