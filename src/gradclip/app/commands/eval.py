"""``gradclip eval``: score a trained text model on another CSV of the same format.

Rows the run trained on are left out (one warning line says how many): scoring them
overstates the model. ``--baseline`` also fits word + character TF-IDF with logistic
regression on the run's own training split and scores it on the same rows, side by side.

A language-model run (``--task lm``, any model) is scored on another text instead: the
comments of a CSV, or a plain-text file (any other suffix), in bits per character.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gradclip.app.commands import COMMANDS
from gradclip.app.commands.options import HelpFormatter
from gradclip.app.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help=COMMANDS["eval"], formatter_class=HelpFormatter,
        description=__doc__.split("\n")[0].replace("``", "") + "\n\nexample:\n  gradclip eval runs/text-gru-"
        "norm_1.0-20260101-120000 --data unseen.csv --baseline")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="run directory written by gradclip train --task text")
    parser.add_argument("--data", type=Path, required=True,
                        help="CSV with the run's text column and label columns (lm: a CSV's "
                             "comments, or a plain-text file)")
    parser.add_argument("--baseline", action="store_true",
                        help="also fit word+char TF-IDF + logistic regression on the run's "
                             "training split and score it on the same rows (needs "
                             "scikit-learn and the run's training file)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (mean_roc_auc, per_label, accuracy, loss; "
                             "with --baseline a 'baseline' object of the same keys)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from gradclip.app.tasks.text.metrics import format_label_table, label_report
    from gradclip.app.training.rundir import json_safe

    if not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    from gradclip.app.training.scoring import open_scoring

    _, task, model, device = open_scoring(args.run_dir, args.device)
    if args.baseline and task.name != "text":
        raise UserError(f"--baseline is for runs of --task text; {args.run_dir} is a "
                        f"--task {task.name} run")
    with torch.no_grad():
        scores = task.evaluate_file(model, args.data, device)
    if task.name == "lm":
        return print_language_model_scores(args, scores)
    seen = scores.get("training_rows_skipped", 0)
    if seen:
        print(f"warning: {seen} rows of {args.data} were in the run's training split; scoring "
              f"only the {scores['rows']} unseen rows", file=sys.stderr, flush=True)
    baseline = None
    if args.baseline:
        from gradclip.app.tasks.text.baseline import baseline_logits

        table, _ = task.unseen_rows(args.data)
        train_texts, train_targets = task.training_split()
        columns = [task.label_names.index(name) for name in table.label_names]
        logits = baseline_logits(train_texts, train_targets[:, columns], table.texts)
        baseline = label_report(logits, table.targets, table.label_names)
    if args.json:
        # strict JSON: a diverged model's NaN loss is written as the string "nan"
        out = dict(scores) if baseline is None else {**scores, "baseline": baseline}
        print(json.dumps(json_safe(out), allow_nan=False))
        return 0
    print(f"{args.data} scored by {args.run_dir} ({scores.get('rows', '?')} rows):")
    print(format_label_table(scores))
    if baseline is not None:
        print(f"\nword+char TF-IDF + logistic regression, fitted on the run's training split "
              f"({len(train_texts)} rows), same rows:")
        print(format_label_table(baseline))
        print(f"\nmean ROC-AUC: model {_shown(scores['mean_roc_auc'])}, baseline "
              f"{_shown(baseline['mean_roc_auc'])}")
    return 0


def print_language_model_scores(args: argparse.Namespace, scores: dict) -> int:
    """Bits per character, loss and perplexity of a language model on the text of --data."""
    from gradclip.app.training.rundir import json_safe

    if args.json:
        print(json.dumps(json_safe(scores), allow_nan=False))
        return 0
    print(f"{args.data} scored by {args.run_dir} ({scores['characters']:,} characters): "
          f"{scores['bits_per_char']:.4f} bits per character (loss {scores['loss']:.4f} nats, "
          f"perplexity {scores['perplexity']:.3f})")
    return 0


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
