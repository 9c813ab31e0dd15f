"""Overhead of ``GradientMonitor`` on a training step of an LSTM model.

    python -m benchmarks.monitor [--threads 1] [--repeats 30] [--json PATH]

One step: ``zero_grad``, forward of a 1-layer LSTM (hidden 128) over a batch of 64
sequences of length 100, cross-entropy, ``backward``, ``optimizer.step`` (SGD). Timed
round-robin with and without the monitor:

- ``monitor every=1``: ``monitor.step()`` each step, with the time-profile hooks on the LSTM
  (the report is created every step but not read, as in a loop that only prints it now and
  then);
- ``monitor every=1, read``: the same, and the report's summary built (``str(report)``, one
  host transfer plus the verdicts in Python) every step;
- ``monitor every=50``: the statistics every step, a report every 50th;
- ``monitor.step() alone``: just the monitor's per-step work on the LSTM's gradients (no
  forward/backward), the most robust figure on a busy machine.

Prints the median step time of each and its ratio to the plain step.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

import gradclip
from benchmarks.common import interleaved_medians, machine, print_table, write_json


class LSTMClassifier(nn.Module):
    def __init__(self, inputs: int = 8, hidden: int = 128, classes: int = 4):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(sequences)[0][:, -1])


def training_step(model: nn.Module, after_backward: Callable[[], object] | None
                  ) -> Callable[[], None]:
    """A closure running one optimizer step, calling ``after_backward`` before the update."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 100, 8, generator=generator)
    targets = torch.randint(0, 4, (64,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
    return step


def read_each(monitor: gradclip.GradientMonitor) -> Callable[[], None]:
    def after_backward() -> None:
        report = monitor.step()
        if report is not None:
            str(report)
    return after_backward


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch.set_num_threads({args.threads}); torch {torch.__version__}")
    torch.manual_seed(0)
    models = {name: LSTMClassifier() for name in
              ("plain", "monitor every=1", "monitor every=1, read", "monitor every=50")}
    steps = {
        "plain": training_step(models["plain"], None),
        "monitor every=1": training_step(
            models["monitor every=1"],
            gradclip.GradientMonitor(models["monitor every=1"], every=1).step),
        "monitor every=1, read": training_step(
            models["monitor every=1, read"],
            read_each(gradclip.GradientMonitor(models["monitor every=1, read"], every=1))),
        "monitor every=50": training_step(
            models["monitor every=50"],
            gradclip.GradientMonitor(models["monitor every=50"], every=50).step),
    }
    alone_model = LSTMClassifier()
    training_step(alone_model, None)()  # leaves gradients in place
    alone = gradclip.GradientMonitor(alone_model, every=1000000)
    steps["monitor.step() alone"] = alone.step
    medians = interleaved_medians(steps, args.repeats, warmup=3)
    base = medians["plain"]
    rows = [("variant", "median step (ms)", "ratio to plain")]
    rows += [(name, f"{seconds * 1e3:.2f}", f"{seconds / base:.3f}")
             for name, seconds in medians.items()]
    print_table("LSTM 128, batch 64 x 100 steps, SGD: training step with the monitor", rows)
    result = {"machine": machine(), "threads": args.threads,
              "median_ms": {n: round(s * 1e3, 3) for n, s in medians.items()},
              "ratio": {n: round(s / base, 4) for n, s in medians.items()}}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
