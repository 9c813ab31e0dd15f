"""The text task's figures: the default ``gradclip train --task text`` against TF-IDF + LR.

Protocol (the docs' text page cites this script's output): train on the first 8,000 rows of
the data file, score the last 1,000, which no run ever sees (not for validation, not for any
choice of settings); the runs differ by ``--seed`` (the split of the 8,000 rows into training
and validation, the weights, the batch order). Each run is ``gradclip train --task text``
with no tuning flags (plus ``--flags``, e.g. ``--flags "--clip none"``), then ``gradclip eval
RUN --data last1000.csv --baseline --json``: the model and word+char TF-IDF + logistic
regression fitted on the same training split, on the same unseen rows.

    python -m benchmarks.text --data ../shared/data/toxic_comments.csv --seeds 0,1,2 \\
        --out runs/bench-text

Writes ``results.json`` in ``--out`` and prints per-seed and per-label tables (Markdown;
``--markdown FILE`` writes them to a file too, as ``make docs-figures --only text`` does).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.markdown import text_tables, write_markdown

TRAIN_ROWS, TEST_ROWS = 8000, 1000


def split_file(data: Path, out: Path) -> tuple[Path, Path]:
    """``first.csv`` (the first 8,000 rows) and ``last.csv`` (the last 1,000) in ``out``."""
    if not data.is_file():
        raise SystemExit(f"--data {data}: no such file")
    csv.field_size_limit(2**31 - 1)
    with data.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    if len(body) < TRAIN_ROWS + TEST_ROWS:
        raise SystemExit(f"{data} has {len(body)} rows; the protocol needs "
                         f"{TRAIN_ROWS + TEST_ROWS}")
    paths = out / "first.csv", out / "last.csv"
    for path, part in zip(paths, (body[:TRAIN_ROWS], body[-TEST_ROWS:]), strict=True):
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(part)
    return paths


def gradclip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradclip", *argv], capture_output=True,
                          text=True, check=False)


def one_run(seed: int, first: Path, last: Path, out: Path, flags: list[str]) -> dict:
    run_dir = out / "runs" / f"seed{seed}"
    started = time.perf_counter()
    trained = gradclip("train", "--task", "text", "--data", str(first), "--seed", str(seed),
                       "--out", str(run_dir), "--progress", "never", *flags)
    seconds = time.perf_counter() - started
    if trained.returncode != 0:
        raise SystemExit(f"seed {seed}: train failed:\n{trained.stderr[-2000:]}")
    scored = gradclip("eval", str(run_dir), "--data", str(last), "--baseline", "--json")
    if scored.returncode != 0:
        raise SystemExit(f"seed {seed}: eval failed:\n{scored.stderr[-2000:]}")
    scores = json.loads(scored.stdout)
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.strip()]
    steps = [step for step in steps if "grad_norm" in step]
    norms = [step["grad_norm"] for step in steps]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "seconds": seconds, "train_seconds": summary.get("seconds"),
            "steps": len(steps), "clipped_steps": sum(bool(step["clipped"]) for step in steps),
            "median_grad_norm": statistics.median(norms) if norms else None,
            "max_grad_norm": max(norms) if norms else None,
            "validation_mean_roc_auc": summary["eval"]["mean_roc_auc"],
            "model": scores, "baseline": scores["baseline"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--flags", default="", help="extra gradclip train flags, quoted")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    first, last = split_file(args.data, args.out)
    results = []
    for seed in (int(seed) for seed in args.seeds.split(",")):
        results.append(one_run(seed, first, last, args.out, shlex.split(args.flags)))
        r = results[-1]
        print(f"seed {seed}: model {r['model']['mean_roc_auc']:.4f}, TF-IDF+LR "
              f"{r['baseline']['mean_roc_auc']:.4f}, {r['seconds']:.0f} s", flush=True)
        (args.out / "results.json").write_text(json.dumps(
            {"flags": args.flags, "results": results}, indent=2) + "\n")
    command = " ".join(["python -m benchmarks.text", *(argv if argv is not None else sys.argv[1:])])
    tables = text_tables(command, results)
    if args.markdown is not None:
        write_markdown(args.markdown, tables)
    print(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
