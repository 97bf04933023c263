"""Post-processing of base clusters: dissolve incoherent small clusters, merge near-duplicates, absorb noise,
and (with a reranker) re-home boundary items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clado.backends.pair_judge import PairJudge
from clado.pipeline.labels import canonical_labels
from clado.vectors import unit


class RefineSettings(BaseModel):
    """Post-processing of base clusters; a cosine threshold above 1 turns its step off (no pair reaches it)."""

    model_config = ConfigDict(extra="forbid")
    absorb_threshold: float = Field(
        0.5,
        ge=-1,
        le=2,
        description="A noise item joins its nearest cluster when cosine to the centroid is at least this",
    )
    merge_threshold: float = Field(
        0.92, ge=-1, le=2, description="Two clusters merge when the cosine of their centroids is at least this"
    )
    small_cluster_size: int = Field(5, ge=0, description="Clusters smaller than this are checked for coherence")
    small_cluster_coherence: float = Field(
        0.6, ge=-1, le=1, description="A small cluster is kept when the mean cosine among its members is at least this"
    )
    boundary_margin: float = Field(
        0.02,
        ge=0,
        le=2,
        description="Boundary items: cosine to their own centroid minus cosine to the nearest other centroid "
        "below this; the reranker checks them against the medoids of their candidate clusters",
    )
    boundary_candidates: int = Field(
        2,
        ge=1,
        le=100,
        description="Clusters whose medoids a noise or boundary item is compared with: its nearest centroids "
        "(for a boundary item, its own cluster and at least one other)",
    )


@dataclass
class RefineResult:
    """Refined labels (0..k-1, -1 = unassigned), medoid row per cluster and what changed."""

    labels: np.ndarray
    medoids: dict[int, int]
    stats: dict[str, Any] = field(default_factory=dict)


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


def dissolve_small(X: np.ndarray, labels: np.ndarray, *, settings: RefineSettings) -> tuple[np.ndarray, int]:
    """Return small clusters whose members are not similar enough to noise; noise absorption may re-home them."""
    out = labels.copy()
    dissolved = 0
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        if len(members) < settings.small_cluster_size and coherence(X, members) < settings.small_cluster_coherence:
            out[members] = -1
            dissolved += 1
    return out, dissolved


def merge_duplicates(
    X: np.ndarray, labels: np.ndarray, *, settings: RefineSettings, judge: PairJudge | None = None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedily merge the most similar pair of clusters while centroid cosine >= merge_threshold.

    With a judge, the two medoids must be confirmed (unscored over budget = the embedding decides).
    """
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
        if judge is not None and judge.agree([(medoids[a], medoids[b])])[0] is False:
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
    X: np.ndarray, labels: np.ndarray, *, settings: RefineSettings, judge: PairJudge | None = None
) -> tuple[np.ndarray, int]:
    """Attach each noise item to its nearest centroid when cosine >= absorb_threshold.

    With a judge, the item is compared with the medoids of its `boundary_candidates` nearest clusters
    above the threshold and joins the best-scoring one the judge confirms; if the judge confirms none it
    stays noise, and when the budget is spent the nearest centroid is taken.
    """
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    ids, C = centroids(X, out)
    if len(noise) == 0 or len(ids) == 0:
        return out, 0
    sims = X[noise] @ C.T
    ok = sims.max(axis=1) >= settings.absorb_threshold
    rows, sims = noise[ok], sims[ok]
    if judge is None:
        out[rows] = ids[sims.argmax(axis=1)]
        return out, len(rows)
    medoids = medoid_rows(X, out)
    candidates = [
        [int(ids[c]) for c in order if sim[c] >= settings.absorb_threshold]
        for sim, order in zip(sims, np.argsort(-sims, axis=1, kind="stable")[:, : settings.boundary_candidates])
    ]
    pairs = [(int(r), medoids[c]) for r, cands in zip(rows, candidates) for c in cands]
    score = dict(zip(pairs, judge.scores(pairs)))
    absorbed = 0
    for r, cands in zip(rows.tolist(), candidates):
        scored = [(s, c) for c in cands if (s := score[(r, medoids[c])]) is not None]
        if len(scored) < len(cands):
            out[r] = cands[0]
        else:
            best, target = max(scored, key=lambda t: t[0])
            if best < judge.threshold:
                continue
            out[r] = target
        absorbed += 1
    return out, absorbed


def membership_margins(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster ids, item-to-centroid cosines (n, k), and per item: own-centroid cosine minus the best other's.

    Noise items get margin -inf.
    """
    ids, C = centroids(X, labels)
    sims = X @ C.T
    margin = np.full(len(X), -np.inf, dtype=np.float32)
    assigned = np.flatnonzero(labels >= 0)
    if len(ids) > 1 and len(assigned):
        col = np.searchsorted(ids, labels[assigned])
        own = sims[assigned, col]
        others = sims[assigned].copy()
        others[np.arange(len(assigned)), col] = -np.inf
        margin[assigned] = own - others.max(axis=1)
    elif len(assigned):
        margin[assigned] = np.inf
    return ids, sims, margin


def reassign_boundary(
    X: np.ndarray, labels: np.ndarray, *, settings: RefineSettings, judge: PairJudge
) -> tuple[np.ndarray, int]:
    """Move low-margin items to another candidate cluster when the judge prefers that cluster's medoid.

    Boundary items (margin below `boundary_margin`) are taken most uncertain first; each is scored
    against the medoids of its own cluster and its nearest other clusters (`boundary_candidates` in all)
    and moves when the best other medoid is confirmed and scores above its own medoid.
    """
    ids, sims, margin = membership_margins(X, labels)
    rows = np.flatnonzero((labels >= 0) & (margin < settings.boundary_margin))
    rows = rows[np.argsort(margin[rows], kind="stable")]
    medoids = medoid_rows(X, labels)
    medoid_set = set(medoids.values())
    plans: list[tuple[int, list[int]]] = []
    for r in rows.tolist():
        if r in medoid_set:
            continue
        own = int(labels[r])
        nearest = [int(ids[c]) for c in np.argsort(-sims[r], kind="stable")[: settings.boundary_candidates + 1]]
        others = [c for c in nearest if c != own][: max(1, settings.boundary_candidates - 1)]
        plans.append((r, [own, *others]))
    pairs = [(r, medoids[c]) for r, cands in plans for c in cands]
    score = dict(zip(pairs, judge.scores(pairs)))
    out = labels.copy()
    moved = 0
    for r, (own, *others) in plans:
        own_score = score[(r, medoids[own])]
        scored = [(s, c) for c in others if (s := score[(r, medoids[c])]) is not None]
        if own_score is None or not scored:
            continue
        best, target = max(scored, key=lambda t: t[0])
        if best >= judge.threshold and best > own_score:
            out[r] = target
            moved += 1
    return out, moved


def refine_clusters(
    X: np.ndarray, labels: np.ndarray, *, settings: RefineSettings, judge: PairJudge | None = None
) -> RefineResult:
    """Dissolve incoherent small clusters, merge near-duplicates, absorb noise, re-home boundary items
    (only with a judge), then renumber by size. Items that stay noise are "Unassigned", never a topic.
    """
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) != len(X):
        raise ValueError(f"{len(labels)} labels for {len(X)} vectors")
    if judge is not None and len(judge.texts) != len(X):
        raise ValueError(f"{len(judge.texts)} texts for {len(X)} vectors")
    out, dissolved = dissolve_small(X, labels, settings=settings)
    out, merged = merge_duplicates(X, out, settings=settings, judge=judge)
    out, absorbed = absorb_noise(X, out, settings=settings, judge=judge)
    moved = 0
    if judge is not None:
        out, moved = reassign_boundary(X, out, settings=settings, judge=judge)
    out = canonical_labels(out)
    stats: dict[str, Any] = {
        "small_clusters_dissolved": dissolved,
        "merged_pairs": len(merged),
        "absorbed": absorbed,
        "boundary_moved": moved,
        "remaining_noise": int((out < 0).sum()),
        "clusters": int(out.max() + 1) if len(out) else 0,
    }
    if judge is not None:
        stats["rerank"] = judge.stats()
    return RefineResult(labels=out, medoids=medoid_rows(X, out), stats=stats)
