"""Cluster keywords by class-based TF-IDF (as in BERTopic) and readable names built from them."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

from clado.backends.embed import without_field_labels

STOP_WORDS = sorted(ENGLISH_STOP_WORDS | {"just", "got", "use", "used", "using"})


def ctfidf_keywords(texts: list[str], labels: np.ndarray, *, top_n: int = 8, ngrams: int = 2) -> dict[int, list[str]]:
    """Top c-TF-IDF terms of 1..`ngrams` words (English stop words, a few filler verbs and facet line labels removed) per cluster; noise (-1) is skipped.

    Each cluster's texts form one document; weight = (term count / words in the cluster)
    * log(1 + mean words per cluster / term count over all clusters).
    """
    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels")
    ids = [int(c) for c in np.unique(labels[labels >= 0])]
    docs = [" ".join(without_field_labels(texts[i]) for i in np.flatnonzero(labels == c)) for c in ids]
    if not ids:
        return {}
    vectorizer = CountVectorizer(stop_words=STOP_WORDS, ngram_range=(1, ngrams))
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # every word is a stop word
        return {c: [] for c in ids}
    words = vectorizer.get_feature_names_out()
    unigram = np.array([" " not in w for w in words])
    per_class = counts[:, unigram].sum(axis=1, keepdims=True)
    tf = counts / np.maximum(per_class, 1.0)
    idf = np.log(1.0 + per_class.mean() / np.maximum(counts.sum(axis=0), 1.0))
    scores = tf * idf
    out: dict[int, list[str]] = {}
    for row, c in enumerate(ids):
        order = np.lexsort((words, -scores[row]))  # score descending, then alphabetical
        out[c] = [str(words[i]) for i in order[:top_n] if scores[row, i] > 0]
    return out


def keyword_name(words: list[str], *, max_terms: int = 3) -> str:
    """A short readable name from ranked keywords: a phrase replaces the single words it joins, repeats are skipped."""
    chosen: list[str] = []
    for word in words:
        if len(chosen) == max_terms:
            break
        parts = word.split()
        joined = [c for c in chosen if c in parts]
        if len(parts) > 1 and joined:
            at = chosen.index(joined[0])
            chosen = [c for c in chosen if c not in joined]
            chosen.insert(at, word)
        elif not set(parts) <= {p for c in chosen for p in c.split()}:
            chosen.append(word)
    if not chosen:
        return "Unnamed cluster"
    name = ", ".join(chosen)
    return name[0].upper() + name[1:]
