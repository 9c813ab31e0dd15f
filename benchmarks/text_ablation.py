"""Ablations of the text model's two paths, scored on validation rows only (docs: text page).

Trains the wide & deep model of ``gradclip train --task text`` with a plain loop (AdamW with
the model's parameter groups, cosine schedule, ``clip_grad_norm_`` at 1.0) under one of four
losses: ``joint`` (the default model: one loss on the summed logits), ``separate`` (each path
its own loss: an ensemble trained in one loop), ``wide`` or ``deep`` (one path alone). The
wide path gets an intercept initialised to the training prior. Each epoch it prints the
validation mean ROC-AUC of the deep path, the wide path, their sum and their rank average.
The data is ``first.csv`` of ``python -m benchmarks.text`` (the first 8,000 rows); the last
1,000 rows are scored only with ``--test``, never to choose settings.

    python -m benchmarks.text_ablation --data runs/bench-text/first.csv --loss separate
"""

import argparse
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.nn import functional as F

from gradclip import clip_grad_norm_
from gradclip.app.tasks.text.data import read_comments
from gradclip.app.tasks.text.metrics import label_report
from gradclip.app.tasks.text.model import split_inputs
from gradclip.app.tasks.text.task import TextTask

p = argparse.ArgumentParser()
p.add_argument("--data", type=Path, required=True)
p.add_argument("--test-data", type=Path)
p.add_argument("--out", type=Path, default=Path("runs/text-ablation"))
p.add_argument("--seed", type=int, default=0)
p.add_argument("--loss", default="joint")  # joint | separate | both
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--lr", type=float, default=0.002)
p.add_argument("--wide-scale", type=float, default=2500.0)
p.add_argument("--wide-eps", type=float, default=0.01)
p.add_argument("--hidden", type=int, default=64)
p.add_argument("--sd", type=float, default=0.2)
p.add_argument("--dropout", type=float, default=0.2)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--wide-wd", type=float, default=0.0)
p.add_argument("--deep-weight", type=float, default=1.0)
p.add_argument("--tag", default="")
a = p.parse_args()
THREADS = int(os.environ.get("THREADS", "2"))
torch.set_num_threads(THREADS)
print(f"torch.set_num_threads({THREADS})", flush=True)
a.out.mkdir(parents=True, exist_ok=True)

args = SimpleNamespace(
    data=a.data,
    seed=a.seed,
    batch_size=64,
    vocab_size=None,
    max_len=None,
    val_fraction=None,
    labels=None,
    text_column=None,
    delimiter=None,
)
task = TextTask.from_options(args)
task.settings["spatial_dropout"] = a.sd
task.settings["wide_lr_scale"] = a.wide_scale
task.settings["wide_eps"] = a.wide_eps
torch.manual_seed(a.seed)
model = task.build_model(
    cell="gru", hidden_size=a.hidden, layers=1, bidirectional=True, dropout=a.dropout, embed_dim=128
)
prior = task.train_targets.mean(0).clamp(1e-4, 1 - 1e-4)
model.wide_bias = torch.nn.Parameter((prior / (1 - prior)).log() + task.pos_weight.log())
groups = model.parameter_groups(a.lr)
groups[0]["weight_decay"] = a.wd
groups[1]["weight_decay"] = a.wide_wd
opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=a.wd)
total = task.batches_per_epoch * a.epochs
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))
)
pw = task.pos_weight


def parts(inputs, lengths):
    tokens, codes = split_inputs(inputs)
    deep = (
        model.deep(tokens, lengths)
        if a.loss != "wide"
        else torch.zeros(len(inputs), task.output_size)
    )
    if a.loss == "deep":
        return deep, torch.zeros_like(deep)
    return deep, model.wide_logits(codes) + model.wide_bias


def bce(x, y):
    return F.binary_cross_entropy_with_logits(x, y, pos_weight=pw)


@torch.no_grad()
def scores(ids, targets):
    model.eval()
    lengths = torch.tensor([len(r[0]) for r in ids])
    order = lengths.sort(stable=True).indices
    deep = torch.empty(len(ids), task.output_size)
    wide = torch.empty(len(ids), task.output_size)
    for rows in order.split(256):
        inputs, bl = task.pad([ids[i] for i in rows.tolist()])
        d, w = parts(inputs, bl)
        deep[rows], wide[rows] = d, w
    model.train()
    c = pw.log()
    out = {}
    combos = {"deep": deep, "wide": wide, "sum": deep + wide}
    if a.loss != "joint":
        combos["mean"] = (deep + wide) / 2
        combos["rank"] = None
    for name, logits in combos.items():
        if name == "rank":
            rd = deep.argsort(0).argsort(0).float()
            rw = wide.argsort(0).argsort(0).float()
            logits = rd + rw
            out[name] = round(label_report(logits, targets, task.label_names)["mean_roc_auc"], 4)
            continue
        out[name] = round(label_report(logits - c, targets, task.label_names)["mean_roc_auc"], 4)
    return out


clipped = 0
start = time.time()
model.train()
for step in range(total):
    b = task.train_batch(step)
    d, w = parts(b.inputs, b.lengths)
    if a.loss == "joint":
        loss = bce(d + w, b.targets)
    elif a.loss == "deep":
        loss = bce(d, b.targets)
    elif a.loss == "wide":
        loss = bce(w, b.targets)
    elif a.loss == "separate":
        loss = a.deep_weight * bce(d, b.targets) + bce(w, b.targets)
    else:
        loss = bce(d + w, b.targets) + a.deep_weight * bce(d, b.targets) + bce(w, b.targets)
    opt.zero_grad()
    loss.backward()
    norm = clip_grad_norm_(model.parameters(), 1.0)
    clipped += bool(norm > 1.0)
    opt.step()
    sched.step()
    if (step + 1) % task.batches_per_epoch == 0:
        print(
            f"epoch {(step + 1) // task.batches_per_epoch} val {scores(task.val_ids, task.val_targets)}"
            f" {time.time() - start:.0f}s clipped {clipped}",
            flush=True,
        )
result = {
    "args": {k: str(v) for k, v in vars(a).items()},
    "threads": THREADS,
    "val": scores(task.val_ids, task.val_targets),
    "clipped": clipped,
    "seconds": time.time() - start,
}
if a.test_data is not None:
    table = read_comments(a.test_data, task.label_names)
    result["test"] = scores(task.encode(table.texts), table.targets)
print(json.dumps(result))
with (a.out / "results.jsonl").open("a") as f:
    f.write(json.dumps(result) + "\n")
