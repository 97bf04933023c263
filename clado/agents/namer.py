"""Clio-style cluster naming: each cluster is named from its own examples against its nearest neighbours'.

The prompt shows up to N members (the medoid, then the most diverse members by farthest-point sampling)
and up to M nearest items of other clusters as contrast. Noise (label -1) is never named. Answers that
cannot be used fall back to a deterministic keyword name; names are cut to a word budget and made unique.
At scale the cost stays linear in the items: members are grouped once, contrast candidates come from the nearest
clusters by centroid above CONTRAST_EXACT_ITEMS items, and clusters below `min_share` are not named one by one.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clado.agents.labels import (
    ClusterName,
    ask_or_none,
    clean_name,
    count,
    distinctive_words,
    keyword_label,
    resolve_clashes,
)
from clado.backends.embed import Embedder
from clado.backends.llm import LLMClient
from clado.progress import progress_bar
from clado.prompts import render
from clado.prompts.quoting import quote_data
from clado.vectors import unit

__all__ = ["ClusterName", "NamingSettings", "contrast_examples", "diverse_examples", "name_clusters"]

CONTRAST_EXACT_ITEMS = 20_000  # up to this many items, contrast is ranked over every other cluster's items
CONTRAST_CLUSTERS = 10  # above it, over the items of this many nearest clusters by centroid


class NamingSettings(BaseModel):
    """How clusters are named."""

    model_config = ConfigDict(extra="forbid")
    examples: int = Field(10, ge=1, description="In-cluster examples shown: the medoid, then the most diverse members")
    contrast: int = Field(8, ge=0, description="Nearest items of other clusters shown as contrast")
    max_words: int = Field(10, ge=1, description="Longest name kept; longer names are cut")
    max_example_chars: int = Field(300, ge=20, description="Each example is cut to this many characters")
    candidates: int = Field(
        1,
        ge=1,
        description=(
            "Names drawn per cluster; above 1 each draw sees the examples in another seeded order and the "
            "name most similar to the others by embedding wins (needs an embedder)"
        ),
    )
    max_tokens: int = Field(200, ge=32, description="Completion budget of a naming call")
    min_share: float = Field(
        0.0001, ge=0, le=1, description="Clusters smaller than this share of the items get their keyword name without an LLM call, so the calls stay well below one per leaf at a million items",
    )  # fmt: skip


async def name_clusters(
    texts: list[str],
    X: np.ndarray,
    labels: np.ndarray,
    medoids: dict[int, int],
    *,
    llm: LLMClient,
    settings: NamingSettings,
    events: Counter,
    seed: int = 0,
    fallback_names: dict[int, str] | None = None,
    embedder: Embedder | None = None,
) -> dict[int, ClusterName]:
    """Name every cluster (label >= 0) of `texts` / `X` (one row per text); `medoids` maps label → row index.

    Unusable answers fall back to `fallback_names[label]` (or keywords of the cluster's texts). Counts
    namer_fallback, namer_invalid_output, namer_transport_error, namer_empty_name, namer_empty_description,
    namer_truncated, namer_consensus, namer_clash_reask, namer_clash_keyword_name and namer_below_floor in `events`.
    """
    labels = np.asarray(labels)
    if not (len(texts) == len(labels) == len(X)):
        raise ValueError(f"texts ({len(texts)}), X ({len(X)}) and labels ({len(labels)}) must have the same length")
    if settings.candidates > 1 and embedder is None:
        raise ValueError("NamingSettings.candidates > 1 needs an embedder to pick the consensus name")
    clusters = sorted(int(c) for c in set(labels.tolist()) if c >= 0)
    if not clusters:
        return {}
    unit_vectors = unit(np.asarray(X, dtype=np.float32))
    members = cluster_members(labels)
    words = dict(zip(clusters, distinctive_words([[texts[i] for i in members[c]] for c in clusters])))
    fallback = {c: _fallback_name(c, words[c], fallback_names) for c in clusters}
    floor = math.ceil(settings.min_share * len(labels))
    below = [c for c in clusters if len(members[c]) < floor]
    count(events, "namer_below_floor", len(below))
    below_floor = set(below)
    clusters = [c for c in clusters if c not in below_floor]  # the ones asked
    candidates = contrast_candidates(unit_vectors, members) if len(labels) > CONTRAST_EXACT_ITEMS else None
    shown = {}
    for c in clusters:
        medoid = medoids.get(c)
        examples = diverse_examples(unit_vectors, members[c], medoid, n=settings.examples, texts=texts)
        rows = candidates[c] if candidates is not None else None
        contrast = contrast_examples(unit_vectors, labels, c, m=settings.contrast, texts=texts, rows=rows)
        shown[c] = (
            [quote_data(texts[i], settings.max_example_chars) for i in examples],
            [quote_data(texts[i], settings.max_example_chars) for i in contrast],
        )

    async def ask(c: int, taken: list[str]) -> ClusterName | None:
        examples, contrast = shown[c]
        orders = [examples] + [_shuffled(examples, (seed, c, k)) for k in range(1, settings.candidates)]
        prompts = [
            render("name_cluster", examples=order, contrast=contrast, max_words=settings.max_words,
                   taken_names=[quote_data(t, 100) for t in taken])
            for order in orders
        ]  # fmt: skip
        answers = await asyncio.gather(
            *(
                ask_or_none(llm, p, ClusterName, max_tokens=settings.max_tokens, events=events, prefix="namer")
                for p in prompts
            )
        )
        usable = [u for u in (_usable(a, settings.max_words, fallback[c], events) for a in answers) if u is not None]
        if len(usable) > 1 and embedder is not None:
            events["namer_consensus"] += 1
            return _consensus(usable, embedder)
        return usable[0] if usable else None

    with progress_bar("name clusters", total=len(clusters)) as advance:

        async def ask_first(c: int) -> ClusterName | None:
            answer = await ask(c, [])
            advance()
            return answer

        first = await asyncio.gather(*(ask_first(c) for c in clusters))
    names = {c: fallback[c] for c in below}
    for c, answer in zip(clusters, first):
        if answer is None:
            events["namer_fallback"] += 1
        names[c] = answer or fallback[c]
    order = sorted(names, key=lambda c: (-len(members[c]), c))
    unique = await resolve_clashes(
        [names[c] for c in order],
        reask=lambda i, taken: _none() if order[i] in below_floor else ask(order[i], taken),
        hints=[words[c] for c in order],
        events=events,
        prefix="namer",
    )
    return dict(sorted(zip(order, unique)))


def diverse_examples(
    unit_vectors: np.ndarray, members: np.ndarray, medoid: int | None, *, n: int, texts: Sequence[str]
) -> list[int]:
    """Up to `n` member rows: the medoid (or the member nearest the centroid), then farthest-point sampling.

    Ties go to the lower row; repeated texts are skipped.
    """
    vectors = unit_vectors[members]
    if medoid is None or medoid not in set(members.tolist()):
        medoid = int(members[int(np.argmax(vectors @ unit(vectors.mean(axis=0))))])
    picked = [medoid]
    distance = 1.0 - vectors @ unit_vectors[medoid]
    distance[members == medoid] = -np.inf
    seen = {texts[medoid]}
    while len(picked) < n and np.isfinite(distance).any():
        j = int(np.argmax(distance))
        row = int(members[j])
        distance[j] = -np.inf
        if texts[row] in seen:
            continue
        seen.add(texts[row])
        picked.append(row)
        distance = np.minimum(distance, 1.0 - vectors @ unit_vectors[row])
    return picked


def cluster_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """label → its rows in ascending order, for every label >= 0 (one sort, not one pass per label)."""
    order = np.argsort(labels, kind="stable")
    values, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(v): g for v, g in zip(values.tolist(), groups) if v >= 0}


def contrast_candidates(unit_vectors: np.ndarray, members: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """For each cluster, the rows of its CONTRAST_CLUSTERS nearest other clusters by centroid (ascending)."""
    labels = list(members)
    centroids = unit(np.stack([unit_vectors[members[c]].mean(axis=0) for c in labels]))
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :CONTRAST_CLUSTERS]
    return {c: np.sort(np.concatenate([members[labels[j]] for j in nearest[i]])) for i, c in enumerate(labels)}


def contrast_examples(
    unit_vectors: np.ndarray,
    labels: np.ndarray,
    cluster: int,
    *,
    m: int,
    texts: Sequence[str],
    rows: np.ndarray | None = None,
) -> list[int]:
    """Up to `m` rows of other clusters (noise excluded) nearest to `cluster`'s centroid; repeated texts skipped.

    `rows` bounds the candidates (by default every row of another cluster)."""
    if m == 0:
        return []
    others = np.flatnonzero((labels >= 0) & (labels != cluster)) if rows is None else rows
    centroid = unit(unit_vectors[labels == cluster].mean(axis=0))
    ranked = others[np.argsort(-(unit_vectors[others] @ centroid), kind="stable")]
    picked: list[int] = []
    seen: set[str] = set()
    for row in ranked.tolist():
        if texts[row] not in seen:
            seen.add(texts[row])
            picked.append(row)
            if len(picked) == m:
                break
    return picked


def _usable(answer: ClusterName | None, max_words: int, fallback: ClusterName, events: Counter) -> ClusterName | None:
    """The answer with a clean name, or None when its name is empty."""
    if answer is None:
        return None
    name, cut = clean_name(answer.name, max_words=max_words)
    if not name:
        events["namer_empty_name"] += 1
        return None
    if cut:
        events["namer_truncated"] += 1
    description = " ".join(answer.description.split())
    if not description:
        events["namer_empty_description"] += 1
        description = fallback.description
    return ClusterName(name=name, description=description)


def _consensus(drafts: list[ClusterName], embedder: Embedder) -> ClusterName:
    """The draft whose embedding is closest on average to the others' (ties: the earliest)."""
    vectors = unit(np.asarray(embedder.embed([f"{d.name}: {d.description}" for d in drafts]), dtype=np.float32))
    similarity = vectors @ vectors.T
    mean_to_others = (similarity.sum(axis=1) - np.diag(similarity)) / (len(drafts) - 1)
    return drafts[int(np.argmax(mean_to_others))]


def _fallback_name(cluster: int, words: list[str], fallback_names: dict[int, str] | None) -> ClusterName:
    keywords = keyword_label(words, default=f"Cluster {cluster}")
    if fallback_names and fallback_names.get(cluster):
        return ClusterName(name=fallback_names[cluster], description=keywords.description)
    return keywords


async def _none() -> None:
    """The re-ask of a cluster named by its keywords (below the size floor): no LLM call."""
    return None


def _shuffled(items: list[str], seed: tuple[int, ...]) -> list[str]:
    order = np.random.default_rng(list(seed)).permutation(len(items))
    return [items[i] for i in order]
