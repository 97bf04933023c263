"""Reference clusterings on embedding vectors, scored against gold labels.

Each baseline takes L2-normalised float32 vectors and returns one label per row,
with -1 for noise. `bertopic_recipe` reproduces BERTopic's default clustering
(UMAP to 5-d, then HDBSCAN) with umap-learn and hdbscan directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import hdbscan
import numpy as np
import umap
from sklearn.cluster import KMeans

from clado.eval.metrics import score_labels

KMEANS_N_INIT = 10


def kmeans_true_k(X: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """KMeans told the true number of clusters (k-means++, best of 10 starts)."""
    return KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit_predict(X)


def hdbscan_raw(X: np.ndarray, *, min_cluster_size: int = 5) -> np.ndarray:
    """HDBSCAN straight on the full-dimensional vectors (euclidean on unit vectors)."""
    return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size).fit_predict(X)


def bertopic_recipe(X: np.ndarray, *, seed: int) -> np.ndarray:
    """BERTopic's default clustering: UMAP (5-d, 15 neighbours, cosine), then HDBSCAN (min size 10, eom)."""
    reduced = umap.UMAP(n_components=5, n_neighbors=15, min_dist=0.0, metric="cosine", random_state=seed).fit_transform(
        X
    )
    return hdbscan.HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom").fit_predict(reduced)


def run_baselines(X: np.ndarray, gold: Sequence[Hashable], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Run every baseline on `X` and score it against `gold`: {name: metrics + `seconds`}."""
    if X.ndim != 2 or len(X) != len(gold):
        raise ValueError(f"X has shape {X.shape} but gold has {len(gold)} labels")
    k = len(set(gold))
    methods: dict[str, Callable[[], np.ndarray]] = {
        "kmeans_true_k": lambda: kmeans_true_k(X, k, seed=seed),
        "hdbscan_raw": lambda: hdbscan_raw(X),
        "bertopic_recipe": lambda: bertopic_recipe(X, seed=seed),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, method in methods.items():
        start = time.perf_counter()
        labels = method()
        seconds = time.perf_counter() - start
        results[name] = {**score_labels(labels.tolist(), gold), "seconds": round(seconds, 2)}
    return results
