"""Ablations of the text model's two paths, scored on validation rows only (docs: text page).

Trains the wide & deep model of ``gradclip train --task text`` with a plain loop: AdamW over
the model's parameter groups, cosine schedule, ``clip_grad_norm_`` (``--clip``, default 1.0,
``0`` for none), batches of the task. ``--paths both`` trains each path by a loss of its own
(the default model); ``wide`` or ``deep`` trains one path alone. The flags override one model
setting each (default: the task's). After each epoch it prints the validation mean ROC-AUC
of the deep path, the wide path and the blends ``wide + w * deep`` for a few weights ``w``.
The data is ``first.csv`` of ``python -m benchmarks.text`` (the first 8,000 rows); the last
1,000 rows are never scored here, so nothing is chosen on them.

    python -m benchmarks.text_ablation --data runs/bench-text/first.csv --paths wide \\
        --wide-bias-scale 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from gradclip import clip_grad_norm_
from gradclip.app.errors import UserError
from gradclip.app.tasks.text.metrics import label_report
from gradclip.app.tasks.text.model import split_inputs
from gradclip.app.tasks.text.task import TextTask

BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.5)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/text-ablation"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", choices=("both", "wide", "deep"), default="both")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--clip", type=float, default=1.0, help="max global norm; 0: none")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    for name in ("wide-scale", "wide-bias-scale", "wide-eps", "spatial-dropout"):
        parser.add_argument(f"--{name}", type=float, help="default: the task's setting")
    return parser.parse_args()


def build(args: argparse.Namespace) -> tuple[TextTask, torch.nn.Module]:
    options = SimpleNamespace(data=args.data, seed=args.seed, batch_size=64, vocab_size=None,
                              max_len=None, val_fraction=None, labels=None, text_column=None,
                              delimiter=None)
    task = TextTask.from_options(options)
    overrides = {"wide_lr_scale": args.wide_scale, "wide_bias_lr_scale": args.wide_bias_scale,
                 "wide_eps": args.wide_eps, "spatial_dropout": args.spatial_dropout}
    task.settings.update({key: value for key, value in overrides.items() if value is not None})
    torch.manual_seed(args.seed)
    model = task.build_model(cell="gru", hidden_size=args.hidden, layers=1, bidirectional=True,
                             dropout=args.dropout, embed_dim=128)
    return task, model


def path_logits(model: torch.nn.Module, inputs: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, codes = split_inputs(inputs)
    return model.deep(tokens, lengths), model.wide_logits(codes)


@torch.no_grad()
def validation_scores(task: TextTask, model: torch.nn.Module, paths: str) -> dict[str, float]:
    """Validation mean ROC-AUC of the trained paths and, when both are, of their blends."""
    model.eval()
    deep, wide = [], []
    for start in range(0, len(task.val_ids), 256):
        inputs, lengths = task.pad(task.val_ids[start:start + 256])
        d, w = path_logits(model, inputs, lengths)
        deep.append(d)
        wide.append(w)
    model.train()
    deep, wide = torch.cat(deep), torch.cat(wide)
    blends = {"deep": deep, "wide": wide}
    if paths == "both":
        blends.update({f"wide+{weight}*deep": wide + weight * deep for weight in BLEND_WEIGHTS})
    else:
        blends = {paths: blends[paths]}
    return {name: round(label_report(logits, task.val_targets, task.label_names)
                        ["mean_roc_auc"], 4) for name, logits in blends.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch.set_num_threads({args.threads})", flush=True)
    try:
        task, model = build(args)
    except UserError as error:  # bad --data: one line, as the gradclip command says it
        raise SystemExit(f"error: {error}") from None
    optimizer = torch.optim.AdamW(model.parameter_groups(args.lr), lr=args.lr,
                                  weight_decay=args.weight_decay)
    total = task.batches_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))))
    clipped, started, history = 0, time.perf_counter(), []
    model.train()
    for step in range(total):
        batch = task.train_batch(step)
        deep, wide = path_logits(model, batch.inputs, batch.lengths)
        trained = {"both": (wide, deep), "wide": (wide,), "deep": (deep,)}[args.paths]
        loss = task.loss(torch.cat(trained, dim=1), batch)  # one BCE per trained path, summed
        optimizer.zero_grad()
        loss.backward()
        if args.clip > 0:
            clipped += bool(clip_grad_norm_(model.parameters(), args.clip) > args.clip)
        optimizer.step()
        schedule.step()
        if (step + 1) % task.batches_per_epoch == 0:
            history.append(validation_scores(task, model, args.paths))
            print(f"epoch {len(history)} {history[-1]} {time.perf_counter() - started:.0f}s "
                  f"clipped {clipped} of {step + 1}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"args": {key: str(value) for key, value in vars(args).items()},
              "history": history, "clipped": clipped, "steps": total,
              "seconds": time.perf_counter() - started}
    with (args.out / "results.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
