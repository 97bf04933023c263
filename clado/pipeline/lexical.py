"""Lexical signal for the clustering graph: TF-IDF word n-grams reduced by SVD, mixed into the embeddings.

Sentence embeddings blur intents that differ by a key word ("card arrival" vs "card delivery estimate");
the TF-IDF side keeps that word visible while the embeddings still carry paraphrases.
"""

from __future__ import annotations

import numpy as np

from clado.vectors import unit


def lexical_vectors(texts: list[str], *, dims: int, seed: int) -> np.ndarray | None:
    """Unit-length SVD projections of the texts' TF-IDF (word 1-2-grams seen in at least 2 texts, sublinear tf).

    None when the texts share too few terms to give a projection of at least 2 dimensions.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no term occurs twice
        return None
    k = min(dims, tfidf.shape[1] - 1, len(texts) - 1)
    if k < 2:
        return None
    Z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf)
    return unit(Z).astype(np.float32)


def mix_lexical(X: np.ndarray, texts: list[str], *, weight: float, dims: int, seed: int) -> np.ndarray:
    """`[sqrt(1-w)·X ; sqrt(w)·Z]` re-normalised, so cosines mix as (1-w)·embedding + w·lexical for unit rows.

    X itself when the weight is 0 or the texts give no lexical projection.
    """
    if len(texts) != len(X):
        raise ValueError(f"{len(texts)} texts for {len(X)} vectors")
    Z = lexical_vectors(texts, dims=dims, seed=seed) if weight > 0 else None
    if Z is None:
        return X
    return unit(np.hstack([np.sqrt(1.0 - weight) * X, np.sqrt(weight) * Z])).astype(np.float32)
