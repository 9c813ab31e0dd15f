"""Hashed word and character n-gram bags of comments, the input of the model's wide path.

Each comment becomes the set of its hashed n-grams with their counts: word unigrams and
bigrams and character 2- to 5-grams within word boundaries (scikit-learn's
``HashingVectorizer``, MurmurHash3, so the same text gives the same buckets on every machine
and every run), lower-cased, word and character grams in separate halves of the hash space.
A row is stored as integer *codes*, ``bucket * COUNT_LIMIT + min(count, COUNT_LIMIT - 1)``,
so that a batch stays one long tensor; the model decodes them and weights each bucket by
``(1 + log count) * idf``, normalised to unit length per row (TF-IDF, learnt jointly).

References:
    Weinberger et al. (2009), "Feature Hashing for Large Scale Multitask Learning", ICML.
    Joulin et al. (2017), "Bag of Tricks for Efficient Text Classification", EACL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

COUNT_LIMIT = 64
DEFAULT_BUCKETS = 2**20
_URL = re.compile(r"https?://\S+|www\.\S+")
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_REPEAT = re.compile(r"(.)\1{2,}")


def normalise(text: str) -> str:
    """Lower-case, URLs and IP addresses masked, runs of 3+ equal characters cut to 2."""
    text = _IP.sub(" ipaddr ", _URL.sub(" urladdr ", text.lower()))
    return _REPEAT.sub(r"\1\1", text)


def _vectorizers(buckets: int) -> tuple[Any, Any]:
    try:
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError as error:
        raise ImportError("the text task's n-gram features need scikit-learn: "
                          "pip install 'gradclip[app]'") from error
    half = buckets // 2
    common = dict(n_features=half, alternate_sign=False, norm=None, lowercase=False,
                  dtype="float32")
    words = HashingVectorizer(analyzer="word", ngram_range=(1, 2),
                              token_pattern=r"(?u)\b\w+\b|[^\w\s]", **common)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common)
    return words, chars


def ngram_codes(texts: Sequence[str], buckets: int = DEFAULT_BUCKETS) -> list[list[int]]:
    """The packed ``bucket * COUNT_LIMIT + count`` codes of each text (see the module doc)."""
    import scipy.sparse

    words, chars = _vectorizers(buckets)
    clean = [normalise(text) for text in texts]
    matrix = scipy.sparse.hstack([words.transform(clean), chars.transform(clean)]).tocsr()
    codes = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        counts = matrix.data[start:end].clip(max=COUNT_LIMIT - 1).astype("int64")
        codes.append((matrix.indices[start:end].astype("int64") * COUNT_LIMIT
                      + counts).tolist() or [1])
    return codes


def document_frequency_idf(codes: Sequence[Sequence[int]], buckets: int, min_df: int = 2
                           ) -> Tensor:
    """Smoothed idf per bucket, ``log((1 + n) / (1 + df)) + 1``, from training rows' codes;
    0 for buckets in fewer than ``min_df`` rows (they are left out, as TF-IDF's ``min_df``)."""
    df = torch.zeros(buckets, dtype=torch.float64)
    for row in codes:
        df[torch.tensor(row, dtype=torch.long) // COUNT_LIMIT] += 1
    idf = ((1 + len(codes)) / (1 + df)).log().add(1)
    return torch.where(df >= min_df, idf, 0.0).float()
