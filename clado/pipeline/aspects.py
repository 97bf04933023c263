"""Two-stage clustering for facet values that carry an aspect (reviews).

Stage 1 canonicalises aspects: the distinct aspect strings are embedded and synonyms merged by
cosine (leader clustering, most frequent string first, so the canonical name is the group's most
frequent string). Stage 2 clusters the issues inside each aspect bucket; buckets too small to
cluster share an "other" bucket clustered across aspects. Optionally the clustering vectors mix in
the aspect: `[w_i·E_issue ; w_a·E_aspect]`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clado.backends.embed import Embedder, EmbeddingCache, EmbedSettings, combine, embed_cached
from clado.backends.pair_judge import PairJudge
from clado.backends.token_match import TokenMatcher
from clado.pipeline.cluster import ClusterResult, ClusterSettings, cluster_vectors
from clado.pipeline.labels import canonical_labels


class AspectSettings(BaseModel):
    """Review aspects: how synonyms merge and whether values are clustered inside their aspect's bucket."""

    model_config = ConfigDict(extra="forbid")
    aspect_buckets: bool = Field(
        True,
        description="Cluster values that carry an aspect (reviews) inside their canonical-aspect bucket; "
        "false = one cross-aspect clustering",
    )
    aspect_threshold: float = Field(
        0.88,
        ge=-1,
        le=1,
        description="Aspect strings whose embeddings have at least this cosine are merged as synonyms",
    )
    min_bucket_size: int = Field(
        5, ge=1, description="Aspect buckets smaller than this join a shared 'other' bucket clustered across aspects"
    )


@dataclass
class AspectBuckets:
    """Canonical aspects: `bucket_of[i]` is item i's bucket (-1 = no aspect), `names[b]` its canonical name."""

    bucket_of: np.ndarray
    names: list[str]
    vectors: np.ndarray  # unit vector of each bucket's canonical name
    synonyms: dict[str, str]  # every aspect string seen -> its canonical name


def normalise_aspect(aspect: str) -> str:
    """Case-folded with whitespace collapsed: spellings that differ only so are one aspect."""
    return " ".join(aspect.casefold().split())


def canonical_aspects(
    aspects: list[str | None], *, embedder: Embedder, cache: EmbeddingCache | None, threshold: float = 0.88
) -> AspectBuckets:
    """Group aspect strings whose embeddings have cosine >= `threshold` with the group's leader.

    Keys are visited most frequent first (ties alphabetically); each joins the most similar earlier
    leader at or above the threshold or leads a new group. Deterministic.
    """
    present = [a for a in aspects if a and a.strip()]
    spellings: dict[str, Counter] = {}
    for a in present:
        spellings.setdefault(normalise_aspect(a), Counter())[a.strip()] += 1
    keys = sorted(spellings, key=lambda k: (-sum(spellings[k].values()), k))
    if not keys:
        return AspectBuckets(np.full(len(aspects), -1, dtype=np.int64), [], np.zeros((0, 0), np.float32), {})
    V = embed_cached(keys, embedder=embedder, cache=cache)
    leaders: list[int] = []
    group_of = np.empty(len(keys), dtype=np.int64)
    for i in range(len(keys)):
        sims = V[leaders] @ V[i] if leaders else np.empty(0)
        if len(sims) and sims.max() >= threshold:
            group_of[i] = int(sims.argmax())
        else:
            group_of[i] = len(leaders)
            leaders.append(i)
    names = []
    for g in range(len(leaders)):
        counts: Counter[str] = Counter()
        for row in np.flatnonzero(group_of == g):
            counts.update(spellings[keys[row]])
        names.append(min(counts, key=lambda s: (-counts[s], s)))
    bucket_of_key = dict(zip(keys, group_of.tolist()))
    bucket_of = np.array(
        [bucket_of_key[normalise_aspect(a)] if a and a.strip() else -1 for a in aspects], dtype=np.int64
    )
    synonyms = {s: names[bucket_of_key[k]] for k, counter in spellings.items() for s in counter}
    return AspectBuckets(bucket_of=bucket_of, names=names, vectors=V[leaders], synonyms=synonyms)


def aspect_mixed_vectors(X: np.ndarray, buckets: AspectBuckets, *, settings: EmbedSettings) -> np.ndarray:
    """`[w_i·X ; w_a·E_aspect]` re-normalised; items without an aspect get a zero aspect part."""
    A = np.zeros((len(X), buckets.vectors.shape[1] if len(buckets.names) else 1), dtype=np.float32)
    has = buckets.bucket_of >= 0
    A[has] = buckets.vectors[buckets.bucket_of[has]]
    return combine(X, A, w_issue=settings.issue_weight, w_aspect=settings.aspect_weight)


def cluster_in_buckets(
    X: np.ndarray,
    bucket_of: np.ndarray,
    *,
    settings: ClusterSettings,
    seed: int,
    min_bucket_size: int,
    judge: PairJudge | None = None,
    texts: list[str] | None = None,
    tokens: TokenMatcher | None = None,
) -> ClusterResult:
    """Cluster each aspect bucket of at least `min_bucket_size` items on its own (size-aware method per
    bucket); smaller buckets and items without an aspect are clustered together as "other".

    Labels are made globally unique, then renumbered by size; noise stays -1.
    """
    counts = Counter(bucket_of[bucket_of >= 0].tolist())
    big = sorted(b for b, c in counts.items() if c >= min_bucket_size)
    pools = [np.flatnonzero(bucket_of == b) for b in big]
    other = np.flatnonzero(~np.isin(bucket_of, big))
    if len(other):
        pools.append(other)
    labels = np.full(len(X), -1, dtype=np.int64)
    offset = 0
    methods: Counter[str] = Counter()
    for rows in pools:
        result = cluster_vectors(
            X[rows],
            settings=settings,
            seed=seed,
            judge=None if judge is None else judge.on_rows(rows),
            texts=None if texts is None else [texts[r] for r in rows],
            tokens=None if tokens is None else tokens.on_rows(rows),
        )
        methods[result.method] += 1
        assigned = result.labels >= 0
        labels[rows[assigned]] = result.labels[assigned] + offset
        offset += int(result.labels.max() + 1) if assigned.any() else 0
    canon = canonical_labels(labels)
    params = {
        "aspect_buckets": len(big),
        "other_items": len(other),
        "methods": dict(methods),
        "clusters": int(canon.max() + 1) if len(canon) else 0,
        "noise": int((canon < 0).sum()),
    }
    return ClusterResult(labels=canon, probabilities=None, method="aspect_buckets", params=params)


def cluster_items(
    X: np.ndarray,
    buckets: AspectBuckets | None,
    *,
    settings: ClusterSettings,
    aspects: AspectSettings,
    seed: int,
    judge: PairJudge | None = None,
    texts: list[str] | None = None,
    tokens: TokenMatcher | None = None,
) -> ClusterResult:
    """Bucketed clustering when items carry aspects and `aspects.aspect_buckets`; else one clustering.

    `texts` are the items' clustering texts (the lexical side of Leiden's graph), `tokens` their token matcher.
    """
    if buckets is None or not aspects.aspect_buckets or not (buckets.bucket_of >= 0).any():
        return cluster_vectors(X, settings=settings, seed=seed, judge=judge, texts=texts, tokens=tokens)
    return cluster_in_buckets(
        X, buckets.bucket_of, settings=settings, seed=seed, min_bucket_size=aspects.min_bucket_size, judge=judge,
        texts=texts, tokens=tokens,
    )  # fmt: skip
