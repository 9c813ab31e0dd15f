"""A training run on a busy machine: the default text run alone and beside two busy processes.

Users train beside a browser, an IDE or a second job. This measures what that costs the
application's own process: ``gradclip train --task text --data CSV --steps 100`` (the
default text run, cut to 100 steps) alone, then beside two busy processes (``while True:
pass``, the issue's load). Wall time and CPU time (user + system) of the run's process
come from ``getrusage``; "training" is the run's own training time (``summary.json``).
The targets: beside the busy processes the wall time stays within 3x and the CPU time
within 1.5x of the run alone (idle OpenMP threads must sleep, not spin).

    python -m benchmarks.contention --data ../shared/data/toxic_comments.csv \\
        [--steps 100] [--out runs/bench-contention] [--json FILE] [--markdown FILE]

The busy processes die with this one (``die_with_parent``) and stop after an hour anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import load_average, machine, update_json
from benchmarks.markdown import contention_table, write_markdown

BUSY = ("import os, sys, time\n"
        "from gradclip.app.experiments.workers import die_with_parent\n"
        "die_with_parent(int(sys.argv[1]))\n"
        "end = time.monotonic() + 3600\n"
        "while time.monotonic() < end:\n"
        "    pass\n")


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each, for the duration of the block."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid())])
                for _ in range(count)]
    try:
        time.sleep(1.0)  # let them reach their loop
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def timed_run(data: Path, steps: int, out: Path) -> dict[str, object]:
    """One ``gradclip train --task text`` run: wall, CPU and training seconds, final loss."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gradclip", "train", "--task", "text",
                           "--data", str(data), "--steps", str(steps), "--out", str(out),
                           "--progress", "never"], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"gradclip train failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return {"torch_threads": config["train"]["threads"], "wall_seconds": round(wall, 1),
            "cpu_seconds": round(after.ru_utime + after.ru_stime
                                 - before.ru_utime - before.ru_stime, 1),
            "training_seconds": round(float(summary["seconds"]), 1),
            "final_train_loss": summary["final_train_loss"],
            "load_average_before": load_before, "load_average_after": load_average()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contention",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the toxic-comment CSV")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-contention"),
                        help="where the runs are trained (replaced)")
    parser.add_argument("--json", default="benchmarks/results.json",
                        help="file whose \"contention\" entry receives the figures")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table as Markdown to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: no such file")
    rows = []
    print(f"alone: load average {load_average()}", flush=True)
    rows.append({"beside": 0, **timed_run(args.data, args.steps, args.out / "alone")})
    print(f"  {rows[-1]}\nbeside {args.busy} busy processes", flush=True)
    with busy_processes(args.busy):
        rows.append({"beside": args.busy, **timed_run(args.data, args.steps, args.out / "busy")})
    print(f"  {rows[-1]}", flush=True)
    payload = {"command": " ".join(["python -m benchmarks.contention", *argv]),
               "machine": machine(), "steps": args.steps, "rows": rows}
    update_json(args.json, {"contention": payload})
    if args.markdown is not None:
        write_markdown(args.markdown, contention_table(payload))
    print(contention_table(payload))
    return payload


if __name__ == "__main__":
    main()
