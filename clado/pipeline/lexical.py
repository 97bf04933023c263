"""Lexical signal for the clustering graph: TF-IDF word n-grams reduced by SVD, mixed into the embeddings.

Sentence embeddings blur intents that differ by a key word ("card arrival" vs "card delivery estimate");
the TF-IDF side keeps that word visible while the embeddings still carry paraphrases.
"""

from __future__ import annotations

import numpy as np

from clado.vectors import unit

BATCH = 50000  # texts projected at a time above the fit sample


def lexical_vectors(texts: list[str], *, dims: int, seed: int, fit_max: int | None = None) -> np.ndarray | None:
    """Unit-length SVD projections of the texts' TF-IDF (word 1-2-grams seen in at least 2 texts, sublinear tf).

    Above `fit_max` texts the vocabulary and the SVD are fitted on a fixed random sample of `fit_max` of them and
    every text is projected in batches. None when the texts share too few terms to give at least 2 dimensions.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    sampled = fit_max is not None and n > fit_max
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_max, replace=False)) if sampled else None
    fit_texts = [texts[i] for i in fit_rows] if fit_rows is not None else texts
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    try:
        tfidf = vectorizer.fit_transform(fit_texts)
    except ValueError:  # no term occurs twice
        return None
    k = min(dims, tfidf.shape[1] - 1, len(fit_texts) - 1)
    if k < 2:
        return None
    svd = TruncatedSVD(n_components=k, random_state=seed)
    if not sampled:
        return unit(svd.fit_transform(tfidf)).astype(np.float32)
    svd.fit(tfidf)
    Z = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, BATCH):
        Z[start : start + BATCH] = unit(svd.transform(vectorizer.transform(texts[start : start + BATCH])))
    return Z


def mix_lexical(
    X: np.ndarray, texts: list[str], *, weight: float, dims: int, seed: int, fit_max: int | None = None
) -> np.ndarray:
    """`[sqrt(1-w)·X ; sqrt(w)·Z]` re-normalised, so cosines mix as (1-w)·embedding + w·lexical for unit rows.

    X itself when the weight is 0 or the texts give no lexical projection.
    """
    if len(texts) != len(X):
        raise ValueError(f"{len(texts)} texts for {len(X)} vectors")
    Z = lexical_vectors(texts, dims=dims, seed=seed, fit_max=fit_max) if weight > 0 else None
    if Z is None:
        return X
    G = np.empty((len(X), X.shape[1] + Z.shape[1]), dtype=np.float32)
    for start in range(0, len(X), BATCH):
        rows = slice(start, start + BATCH)
        G[rows] = unit(np.hstack([np.sqrt(1.0 - weight) * X[rows], np.sqrt(weight) * Z[rows]]))
    return G
