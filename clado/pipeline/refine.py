"""Post-processing of base clusters: dissolve incoherent small clusters, merge near-duplicates, absorb noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clado.pipeline.cluster import ClusterSettings, canonical_labels

AGREE = 0.5  # a reranker score at or above this confirms a pairing


class PairScorer(Protocol):
    """A reranker: one relevance score in [0, 1] per (query, document) pair."""

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]: ...


@dataclass
class RefineResult:
    """Refined labels (0..k-1, -1 = unassigned), medoid row per cluster and what changed."""

    labels: np.ndarray
    medoids: dict[int, int]
    stats: dict[str, Any] = field(default_factory=dict)


def unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


def centroids(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids (sorted) and their unit-length mean vectors."""
    ids = np.unique(labels[labels >= 0])
    if len(ids) == 0:
        return ids, np.empty((0, X.shape[1]), dtype=X.dtype)
    return ids, unit(np.stack([X[labels == c].mean(axis=0) for c in ids]))


def medoid_rows(X: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """For each cluster, the member with the highest mean cosine to its members."""
    out: dict[int, int] = {}
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        out[int(c)] = int(members[np.argmax(X[members] @ X[members].sum(axis=0))])
    return out


def coherence(X: np.ndarray, members: np.ndarray) -> float:
    """Mean pairwise cosine among members (0 for a singleton)."""
    m = len(members)
    if m < 2:
        return 0.0
    total = X[members].sum(axis=0)
    return float((total @ total - m) / (m * (m - 1)))


def dissolve_small(X: np.ndarray, labels: np.ndarray, *, settings: ClusterSettings) -> tuple[np.ndarray, int]:
    """Return small clusters whose members are not similar enough to noise; noise absorption may re-home them."""
    out = labels.copy()
    dissolved = 0
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        if len(members) < settings.small_cluster_size and coherence(X, members) < settings.small_cluster_coherence:
            out[members] = -1
            dissolved += 1
    return out, dissolved


def _confirmed(reranker: PairScorer | None, texts: list[str] | None, pairs: list[tuple[int, int]]) -> list[bool]:
    """Reranker verdicts on row pairs; all true when no reranker or no texts are given."""
    if reranker is None or texts is None or not pairs:
        return [True] * len(pairs)
    scores = reranker.score_pairs([(texts[a], texts[b]) for a, b in pairs])
    return [s >= AGREE for s in scores]


def merge_duplicates(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    settings: ClusterSettings,
    reranker: PairScorer | None = None,
    texts: list[str] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedily merge the most similar pair of clusters while centroid cosine >= merge_threshold."""
    out = labels.copy()
    ids, C = centroids(X, out)
    blocked: set[tuple[int, int]] = set()  # index pairs the reranker rejected
    merged: list[tuple[int, int]] = []
    alive = np.ones(len(ids), dtype=bool)
    S = C @ C.T
    np.fill_diagonal(S, -np.inf)
    while len(ids) > 1:
        i, j = divmod(int(np.argmax(S)), len(ids))
        if S[i, j] < settings.merge_threshold:
            break
        a, b = int(ids[i]), int(ids[j])
        medoids = medoid_rows(X, np.where(np.isin(out, (a, b)), out, -1))
        if not _confirmed(reranker, texts, [(medoids[a], medoids[b])])[0]:
            blocked.add((min(i, j), max(i, j)))
            S[i, j] = S[j, i] = -np.inf
            continue
        keep, drop = min(i, j), max(i, j)
        out[out == ids[drop]] = ids[keep]
        merged.append((a, b))
        C[keep] = unit(X[out == ids[keep]].mean(axis=0))
        alive[drop] = False
        row = C @ C[keep]
        row[keep] = -np.inf
        row[~alive] = -np.inf
        S[keep], S[:, keep] = row, row
        S[drop], S[:, drop] = -np.inf, -np.inf
        for p, q in blocked:
            S[p, q] = S[q, p] = -np.inf
    return out, merged


def absorb_noise(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    settings: ClusterSettings,
    reranker: PairScorer | None = None,
    texts: list[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Attach each noise item to its nearest centroid when cosine >= absorb_threshold (and the reranker agrees)."""
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    ids, C = centroids(X, out)
    if len(noise) == 0 or len(ids) == 0:
        return out, 0
    sims = X[noise] @ C.T
    best = sims.argmax(axis=1)
    ok = sims[np.arange(len(noise)), best] >= settings.absorb_threshold
    rows, targets = noise[ok], ids[best[ok]]
    medoids = medoid_rows(X, out)
    verdicts = _confirmed(reranker, texts, [(int(r), medoids[int(t)]) for r, t in zip(rows, targets)])
    accepted = np.asarray(verdicts, dtype=bool)
    out[rows[accepted]] = targets[accepted]
    return out, int(accepted.sum())


def refine_clusters(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    settings: ClusterSettings,
    reranker: PairScorer | None = None,
    texts: list[str] | None = None,
) -> RefineResult:
    """Dissolve incoherent small clusters, merge near-duplicates, absorb noise, then renumber by size.

    The reranker (scores on item texts) is consulted only when `texts` is given too. Items that stay
    noise are "Unassigned", never a topic.
    """
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) != len(X):
        raise ValueError(f"{len(labels)} labels for {len(X)} vectors")
    if texts is not None and len(texts) != len(X):
        raise ValueError(f"{len(texts)} texts for {len(X)} vectors")
    out, dissolved = dissolve_small(X, labels, settings=settings)
    out, merged = merge_duplicates(X, out, settings=settings, reranker=reranker, texts=texts)
    out, absorbed = absorb_noise(X, out, settings=settings, reranker=reranker, texts=texts)
    out = canonical_labels(out)
    stats = {
        "small_clusters_dissolved": dissolved,
        "merged_pairs": len(merged),
        "absorbed": absorbed,
        "remaining_noise": int((out < 0).sum()),
        "clusters": int(out.max() + 1) if len(out) else 0,
    }
    return RefineResult(labels=out, medoids=medoid_rows(X, out), stats=stats)
