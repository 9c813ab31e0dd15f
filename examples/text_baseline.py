"""TF-IDF + logistic regression baseline for the text task, on the text task's own split.

    python -m examples.text_baseline --data ../shared/data/toxic_comments.csv --seed 0

Word (1-2 gram) and character (2-5 gram, within word boundaries) TF-IDF features with
sublinear term frequency, fitted on the training split only; one logistic regression per
label (one-vs-rest). Rows, labels and the train/validation split come from
``gradclip.app.tasks.text.data`` exactly as ``gradclip train --task text`` makes them, so the
scores sit beside the recurrent model's. Needs scikit-learn (a dev dependency).

References:
    Salton & Buckley (1988), "Term-weighting approaches in automatic text retrieval".
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradclip.app.tasks.text.data import read_comments, split_rows
from gradclip.app.tasks.text.metrics import format_label_table, label_report
from gradclip.app.tasks.text.task import DEFAULTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.text_baseline",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="comment CSV (Jigsaw format)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"],
                        help=f"validation share (default: {DEFAULTS['val_fraction']})")
    parser.add_argument("--labels", default=None,
                        help="comma-separated label columns (default: all present)")
    parser.add_argument("--C", type=float, default=4.0,
                        help="inverse L2 strength of the logistic regressions (default: 4.0)")
    parser.add_argument("--test", default=None,
                        help="also score this CSV (rows never seen), as `gradclip eval` does")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def tfidf_features(train_texts: list[str], *other_texts: list[str]):
    """Word and char n-gram TF-IDF matrices of each text list, vocabularies fitted on training."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, max_features=50_000,
                           sublinear_tf=True, strip_accents="unicode", lowercase=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2,
                           max_features=100_000, sublinear_tf=True, lowercase=True)
    train = hstack([word.fit_transform(train_texts), char.fit_transform(train_texts)]).tocsr()
    return [train, *(hstack([word.transform(texts), char.transform(texts)]).tocsr()
                     for texts in other_texts)]


def fit_and_score(train, train_targets: torch.Tensor, scored: list, C: float) -> list:
    """Logits ``(rows, labels)`` of each matrix in ``scored``: one logistic regression per label."""
    from sklearn.linear_model import LogisticRegression

    columns: list[list[torch.Tensor]] = [[] for _ in scored]
    for label in range(train_targets.shape[1]):
        y = train_targets[:, label].numpy()
        model = None
        if y.min() != y.max():  # with one class only, a constant score
            model = LogisticRegression(C=C, solver="liblinear", max_iter=1000).fit(train, y)
        for column, features in zip(columns, scored, strict=True):
            column.append(torch.zeros(features.shape[0], dtype=torch.float64) if model is None
                          else torch.from_numpy(model.decision_function(features)))
    return [torch.stack(column, dim=1) for column in columns]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    labels = args.labels.split(",") if args.labels else None
    table = read_comments(args.data, labels)
    train_rows, val_rows = split_rows(len(table.texts), args.val_fraction, args.seed)
    start = time.perf_counter()
    test = read_comments(args.test, table.label_names) if args.test else None
    train, *scored = tfidf_features([table.texts[i] for i in train_rows.tolist()],
                                    [table.texts[i] for i in val_rows.tolist()],
                                    *([test.texts] if test else []))
    logits = fit_and_score(train, table.targets[train_rows], scored, args.C)
    report = label_report(logits[0], table.targets[val_rows], table.label_names)
    if test is not None:
        report["test"] = label_report(logits[1], test.targets, test.label_names)
        report["test"]["rows"] = len(test.texts)
    report.update(seconds=round(time.perf_counter() - start, 1), threads=args.threads,
                  train_rows=len(train_rows), val_rows=len(val_rows), seed=args.seed,
                  skipped_empty=table.skipped_empty, features=train.shape[1])
    if args.json:
        print(json.dumps(report))
    else:
        print(f"TF-IDF + logistic regression, seed {args.seed}: {len(train_rows)} training rows, "
              f"{len(val_rows)} validation rows, {train.shape[1]} features, "
              f"torch threads {torch.get_num_threads()}, BLAS threads {args.threads}, "
              f"{report['seconds']} s")
        print(format_label_table(report))
        if test is not None:
            print(f"{args.test} ({len(test.texts)} rows never seen):")
            print(format_label_table(report["test"]))
    return report


if __name__ == "__main__":
    main()
