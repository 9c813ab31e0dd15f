"""The linear baseline of the text task: word + character TF-IDF with logistic regression.

What a strong text classifier without a neural network scores on the same rows, for
``gradclip eval --baseline``: word unigrams and bigrams (at most 50,000, in 2+ rows) and
character 2- to 5-grams within word boundaries (at most 100,000, in 2+ rows), sublinear tf,
idf, unit length; one ``LogisticRegression(C=4, solver="liblinear")`` per label, fitted on the
run's own training split. Needs scikit-learn (``pip install 'gradclip[app]'``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def baseline_logits(train_texts: Sequence[str], train_targets: Tensor,
                    texts: Sequence[str]) -> Tensor:
    """``(rows, labels)`` decision values of the baseline fitted on the training rows."""
    try:
        import scipy.sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError as error:
        raise ImportError("--baseline needs scikit-learn: pip install 'gradclip[app]'") from error
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                            max_features=50_000, strip_accents="unicode")
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                            min_df=2, max_features=100_000)
    train = scipy.sparse.hstack([words.fit_transform(train_texts),
                                 chars.fit_transform(train_texts)]).tocsr()
    scored = scipy.sparse.hstack([words.transform(texts), chars.transform(texts)]).tocsr()
    columns = []
    for label in range(train_targets.shape[1]):
        target = train_targets[:, label].numpy()
        if target.min() == target.max():  # one class only: a constant score
            columns.append(torch.zeros(len(texts), dtype=torch.float64))
            continue
        model = LogisticRegression(C=4.0, max_iter=1000, solver="liblinear").fit(train, target)
        columns.append(torch.from_numpy(model.decision_function(scored)).double())
    return torch.stack(columns, dim=1)
