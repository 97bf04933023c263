import numpy as np
import pytest
from sklearn.datasets import make_blobs

from clado.eval.baselines import bertopic_recipe, hdbscan_raw, kmeans_true_k, run_baselines
from clado.eval.metrics import score_labels


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=400, centers=5, n_features=16, cluster_std=1.0, random_state=3)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    return X, [f"topic{label}" for label in y]


def test_kmeans_with_true_k_recovers_blobs(blobs):
    X, gold = blobs
    labels = kmeans_true_k(X, 5, seed=0)
    scores = score_labels(labels.tolist(), gold)
    assert scores["nmi"] >= 0.95
    assert scores["acc"] >= 0.95
    assert np.array_equal(labels, kmeans_true_k(X, 5, seed=0))


def test_raw_hdbscan_finds_blobs(blobs):
    X, gold = blobs
    scores = score_labels(hdbscan_raw(X).tolist(), gold)
    assert scores["nmi"] >= 0.9
    assert scores["unassigned_share"] < 0.2


@pytest.mark.slow  # UMAP's first call compiles with numba (~14 s)
def test_bertopic_recipe_finds_blobs(blobs):
    X, gold = blobs
    labels = bertopic_recipe(X, seed=0)
    scores = score_labels(labels.tolist(), gold)
    assert scores["nmi"] >= 0.9
    assert scores["n_clusters"] == 5


@pytest.mark.slow
def test_run_baselines_scores_every_method(blobs):
    X, gold = blobs
    results = run_baselines(X[:150], gold[:150], seed=0)
    assert set(results) == {"kmeans_true_k", "hdbscan_raw", "bertopic_recipe"}
    for scores in results.values():
        assert scores["n_gold"] == len(set(gold[:150]))
        assert scores["seconds"] >= 0
    assert results["kmeans_true_k"]["nmi"] >= 0.95


def test_run_baselines_rejects_misaligned_input(blobs):
    X, gold = blobs
    with pytest.raises(ValueError, match="gold has 3 labels"):
        run_baselines(X, gold[:3])
