"""Exact and approximate cosine kNN: the approximate search finds the exact neighbours of real MiniLM vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clado.backends.embed import EmbedSettings, SentenceTransformerEmbedder
from clado.pipeline.knn import KnnSettings, ann_knn, cosine_knn, exact_knn, recall_at_k

DATA = Path(os.environ.get("CLADO_EVAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def banking_vectors() -> np.ndarray:
    """MiniLM vectors of Banking77's 3,080 test queries."""
    if not (DATA / "banking77.jsonl").exists():
        pytest.skip("shared evaluation data not present")
    rows = [json.loads(line) for line in (DATA / "banking77.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows if r["split"] == "test"]
    return SentenceTransformerEmbedder(EmbedSettings()).embed(texts)


def test_approximate_neighbours_of_real_vectors_reach_recall_095_with_exact_distances(banking_vectors):
    X = banking_vectors
    settings = KnnSettings(exact_below=0)
    idx, dist = ann_knn(X, 21, settings=settings)
    exact_idx, _ = exact_knn(X, 21)
    assert recall_at_k(idx, exact_idx) >= 0.95
    assert (idx[:, 0] == np.arange(len(X))).all() and (dist[:, 0] == 0).all()  # self first
    sims = np.einsum("id,ijd->ij", X, X[idx[:, 1:]])
    np.testing.assert_allclose(dist[:, 1:], np.maximum(1 - sims, 0), atol=1e-5)  # exact cosines, not fp16 ones
    assert (np.diff(dist[:, 1:], axis=1) >= -1e-6).all()  # nearest first
    again, _ = ann_knn(X, 21, settings=settings)
    np.testing.assert_array_equal(idx, again)  # deterministic


def test_cosine_knn_is_exact_below_the_threshold(banking_vectors):
    X = banking_vectors[:500]
    idx, dist = cosine_knn(X, 6, settings=KnnSettings(exact_below=501))
    exact_idx, exact_dist = exact_knn(X, 6)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(dist, exact_dist)
    assert recall_at_k(exact_idx, exact_idx) == 1.0
