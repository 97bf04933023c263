"""Cosine k-nearest neighbours of unit rows: exact in row blocks below a size threshold, approximate above it.

The approximate search is faiss's inverted-file index (IVF, vectors stored as float16): the rows are split
into √n·`ann_lists_per_sqrt` k-means cells and each query scans its `ann_probe` nearest cells. Its
candidates are then re-scored with the exact float32 cosines, so the distances handed on are exact and only a
missed neighbour differs from the exact graph (recall is measured in tests/test_knn.py and
benchmarks/bench_scale.py). Training, adding and searching are deterministic for a fixed seed and input.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class KnnSettings(BaseModel):
    """When the kNN search turns approximate and how hard it looks."""

    model_config = ConfigDict(extra="forbid")
    exact_below: int = Field(
        20000, ge=0, description="Inputs with fewer items get the exact kNN (O(n²)); larger ones the approximate"
    )
    ann_lists_per_sqrt: float = Field(
        4.0, gt=0, description="Approximate kNN: k-means cells of the inverted file = this times √n"
    )
    ann_probe: int = Field(24, ge=1, description="Approximate kNN: nearest cells each query scans")
    ann_train_size: int = Field(100000, ge=1000, description="Approximate kNN: rows the cells are trained on")


def exact_knn(X: np.ndarray, k: int, *, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN (self included first) as (indices, cosine distances), computed in row blocks."""
    n = len(X)
    k = min(k, n)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = X[start : start + block] @ X.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = np.inf  # self first, as UMAP expects
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        idx[start : start + block] = top
        d = 1.0 - np.take_along_axis(sims, top, axis=1)
        d[:, 0] = 0.0
        dist[start : start + block] = np.maximum(d, 0.0)
    return idx, dist


def ann_knn(
    X: np.ndarray, k: int, *, settings: KnnSettings, seed: int = 0, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine kNN (self first) through faiss IVF cells, candidates re-scored with exact cosines."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k = min(k, n)
    lists = max(1, min(int(settings.ann_lists_per_sqrt * math.sqrt(n)), n // 39))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(d), d, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    rng = np.random.default_rng(seed)
    train = X[np.sort(rng.choice(n, size=min(n, settings.ann_train_size), replace=False))]
    index.cp.seed = seed
    index.train(train)
    for start in range(0, n, block):
        index.add(X[start : start + block])
    index.nprobe = min(settings.ann_probe, lists)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        _, found = index.search(X[rows], k)
        idx[rows], dist[rows] = _rescored(X, rows, found)
    return idx, dist


def _rescored(X: np.ndarray, rows: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The found neighbours of `rows` with self first, ordered by exact cosine; unfilled slots (-1) get the row
    itself at distance 1 (faiss returns -1 only when fewer than k items share the probed cells)."""
    found = np.where(found < 0, rows[:, None], found)
    sims = np.einsum("id,ijd->ij", X[rows], X[found])
    sims[found == rows[:, None]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, : found.shape[1] - 1]
    top = np.take_along_axis(found, order, axis=1)
    d = 1.0 - np.take_along_axis(sims, order, axis=1)
    d[~np.isfinite(d)] = 1.0
    return np.column_stack([rows, top]), np.column_stack([np.zeros(len(rows)), np.maximum(d, 0)]).astype(np.float32)


def cosine_knn(X: np.ndarray, k: int, *, settings: KnnSettings, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN of unit rows (self first, k columns): exact below `settings.exact_below` items, else approximate."""
    if len(X) < settings.exact_below:
        return exact_knn(X, k)
    return ann_knn(X, k, settings=settings, seed=seed)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact neighbours (self column left out) that the approximate search found."""
    hits = sum(len(np.intersect1d(a[1:], b[1:])) for a, b in zip(found, exact))
    return hits / max(1, exact[:, 1:].size)
