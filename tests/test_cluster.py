"""Base clustering paths on synthetic blobs: score floors, auto choice, determinism, plugged-in clusterers."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from clado.pipeline.cluster import (
    ClusterSettings,
    ResolutionSettings,
    canonical_labels,
    cluster_vectors,
    diagnostics_acceptable,
    graph_edges,
    knn_fuzzy_graph,
    partition_diagnostics,
    step_back,
)
from clado.pipeline.knn import exact_knn
from clado.pipeline.refine import refine_clusters


def blobs(k: int, per: int, *, dim: int = 32, spread: float = 0.12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k clusters of unit vectors around random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gold = np.repeat(np.arange(k), per)
    X = centres[gold] + spread * rng.normal(size=(k * per, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    order = rng.permutation(len(X))
    return X[order].astype(np.float32), gold[order]


@pytest.fixture(scope="module")
def large():
    return blobs(8, 40)  # 320 items: above the agglomerative cut-off


@pytest.mark.parametrize("method", ["hdbscan", "leiden"])
def test_methods_recover_blobs(large, method):
    X, gold = large
    result = cluster_vectors(X, settings=ClusterSettings(method=method))
    assert result.method == method
    assert adjusted_rand_score(gold, result.labels) >= 0.9
    assert (result.labels >= 0).mean() >= 0.9


@pytest.mark.slow
def test_umap_hdbscan_recovers_blobs(large):
    X, gold = large
    result = cluster_vectors(X, settings=ClusterSettings(method="umap_hdbscan", hdbscan={"min_cluster_size": 10}))
    assert result.method == "umap_hdbscan"
    assert result.params["umap_dims"] == 10
    assert adjusted_rand_score(gold, result.labels) >= 0.9


def test_auto_uses_leiden_for_large_and_agglomerative_for_small(large):
    X, _gold = large
    assert cluster_vectors(X, settings=ClusterSettings()).method == "leiden"
    Xs, small_gold = blobs(4, 20, seed=3)
    result = cluster_vectors(Xs, settings=ClusterSettings())
    assert result.method == "agglomerative"
    assert adjusted_rand_score(small_gold, result.labels) >= 0.95


def test_leiden_resolution_size_rule_scales_with_size(large):
    X, _ = large
    settings = ClusterSettings(
        method="leiden", resolution={"leiden_resolution": "size", "leiden_items_per_resolution": 100}
    )
    assert cluster_vectors(X, settings=settings).params["resolution"] == pytest.approx(3.2)
    fixed = cluster_vectors(X, settings=ClusterSettings(method="leiden", resolution={"leiden_resolution": 2.0}))
    assert fixed.params["resolution"] == 2.0


def test_auto_resolution_is_searched(large):
    X, gold = large
    result = cluster_vectors(X, settings=ClusterSettings(method="leiden"))
    assert result.params["resolutions_tried"] >= 2
    assert adjusted_rand_score(gold, result.labels) >= 0.95


@pytest.mark.parametrize("per", [40, 250])
def test_auto_resolution_keeps_the_cluster_count_as_n_grows(per):
    """Fixed classes, growing n (480 -> 3,000 items): the data-driven resolution keeps about 12 clusters,
    where the size rule (n / 300) over-splits the large input (the Banking77-train bug: 324 clusters for 77)."""
    X, gold = blobs(12, per, spread=0.2, seed=1)
    settings = ClusterSettings(method="leiden")
    result = cluster_vectors(X, settings=settings)
    refined = refine_clusters(X, result.labels, settings=settings.refine).labels
    assert 10 <= refined.max() + 1 <= 16
    assert adjusted_rand_score(gold, refined) >= 0.95
    assert (refined >= 0).mean() >= 0.99
    if per == 250:
        size_rule = cluster_vectors(
            X, settings=ClusterSettings(method="leiden", resolution={"leiden_resolution": "size"})
        )
        assert size_rule.params["clusters"] > 40  # what the old default did


def test_auto_resolution_same_seed_same_labels():
    X, _ = blobs(12, 100, spread=0.2, seed=4)
    a = cluster_vectors(X, settings=ClusterSettings(method="leiden"), seed=3)
    b = cluster_vectors(X, settings=ClusterSettings(method="leiden"), seed=3)
    assert np.array_equal(a.labels, b.labels)
    assert a.params == b.params


def test_partition_diagnostics_flag_clusters_cut_in_two():
    X, gold = blobs(6, 60, spread=0.15, seed=2)
    settings = ResolutionSettings()
    graph = knn_fuzzy_graph(X, k=20, seed=0)
    edges, weights = graph_edges(graph)
    good = partition_diagnostics(X, gold, edges, weights, settings=settings)
    assert good == {"clusters": 6, "near_share": 0.0, "twin_share": 0.0, "median_size": 60.0}
    assert diagnostics_acceptable(good, settings)
    halves = gold * 2 + np.random.default_rng(0).integers(0, 2, size=len(gold))  # each blob cut at random
    cut = partition_diagnostics(X, halves, edges, weights, settings=settings)
    assert cut["clusters"] == 12 and cut["twin_share"] == 1.0 and cut["near_share"] == 1.0
    assert not diagnostics_acceptable(cut, settings)
    assert not diagnostics_acceptable(good, settings.model_copy(update={"search_min_median_size": 61}))


def test_step_back_leaves_a_resolution_that_cut_ordinary_clusters():
    """Median sizes 31, 30, 28, 23.5 (CLINC150's overshoot): the last step shrank the median by 16%, so the search
    steps back one resolution; a flat median or a ratio of 0 keeps the highest."""
    accepted = [(np.full(3, i), r, m) for i, (r, m) in enumerate([(8, 31.0), (11.3, 30.0), (16, 28.0), (22.6, 23.5)])]
    labels, resolution = step_back(accepted, ratio=0.875)
    assert resolution == 16 and labels[0] == 2
    assert step_back(accepted, ratio=0.0)[1] == 22.6
    halving = [(np.zeros(1), 1.0, 40.0), (np.zeros(1), 1.4, 20.0), (np.zeros(1), 2.0, 10.0)]
    assert step_back(halving, ratio=0.875)[1] == 1.0, "steps back as long as the median keeps falling steeply"
    assert step_back(accepted[:1], ratio=0.875)[1] == 8


def nested_blobs(topics: int, subtopics: int, per: int, *, offset: float, spread: float, seed: int = 0):
    """Topics made of well separated subtopics: unit vectors and the subtopic of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sub = np.repeat(centres, subtopics, axis=0) + offset * rng.normal(size=(topics * subtopics, 32))
    sub /= np.linalg.norm(sub, axis=1, keepdims=True)
    gold = np.repeat(np.arange(topics * subtopics), per)
    X = sub[gold] + spread * rng.normal(size=(len(gold), 32))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), gold


def test_step_back_keeps_well_separated_subtopics():
    """Clean subtopics split at the highest acceptable resolution without shrinking the median: no step back."""
    X, gold = nested_blobs(6, 2, 40, offset=0.2, spread=0.1)
    for ratio in (0.875, 0.0):
        result = cluster_vectors(X, settings=ClusterSettings(method="leiden", resolution={"search_step_back": ratio}))
        assert result.params["clusters"] == 12 and adjusted_rand_score(gold, result.labels) >= 0.95


def test_same_seed_same_labels(large):
    X, _ = large
    for method in ["leiden", "hdbscan"]:
        a = cluster_vectors(X, settings=ClusterSettings(method=method), seed=7).labels
        b = cluster_vectors(X, settings=ClusterSettings(method=method), seed=7).labels
        assert np.array_equal(a, b)


def test_plugged_in_sklearn_clusterer(large):
    X, gold = large
    result = cluster_vectors(X, settings=ClusterSettings(), clusterer=KMeans(n_clusters=8, n_init=3, random_state=0))
    assert result.method == "KMeans"
    assert result.probabilities is None
    assert adjusted_rand_score(gold, result.labels) >= 0.9
    sizes = np.bincount(result.labels)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_canonical_labels_order_by_size_then_first_member():
    labels = np.array([5, 9, 9, -1, 5, 2, 2, 2])
    # 2 is largest; 5 and 9 tie at size 2, 5 appears first (row 0)
    assert canonical_labels(labels).tolist() == [1, 2, 2, -1, 1, 0, 0, 0]


def test_exact_knn_puts_self_first_and_sorts():
    X, _ = blobs(3, 10, seed=1)
    idx, dist = exact_knn(X, 5, block=7)
    assert (idx[:, 0] == np.arange(len(X))).all()
    assert (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= -1e-6).all()
    brute = np.argsort(-(X @ X.T), axis=1)[:, 1:5]
    assert (np.sort(idx[:, 1:], axis=1) == np.sort(brute, axis=1)).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="2-D"):
        cluster_vectors(np.zeros(5, dtype=np.float32), settings=ClusterSettings())


def test_tiny_inputs():
    assert cluster_vectors(np.zeros((0, 4), np.float32), settings=ClusterSettings()).labels.shape == (0,)
    one = cluster_vectors(np.eye(4, dtype=np.float32)[:2], settings=ClusterSettings())
    assert one.labels.tolist() == [0, 0]


def test_large_inputs_search_the_resolution_on_a_sample_and_still_recover_the_blobs():
    X, gold = blobs(12, 200, spread=0.2, seed=3)  # 2,400 items, above a 1,000-item search sample
    full = cluster_vectors(X, settings=ClusterSettings(method="leiden"))
    sampled = cluster_vectors(X, settings=ClusterSettings(method="leiden", resolution={"search_sample": 1000}))
    assert sampled.params["searched_on"] == 1000 and "searched_on" not in full.params
    assert adjusted_rand_score(gold, sampled.labels) > 0.9 and adjusted_rand_score(gold, full.labels) > 0.9
    again = cluster_vectors(X, settings=ClusterSettings(method="leiden", resolution={"search_sample": 1000}))
    assert (again.labels == sampled.labels).all()  # the sample is fixed by the seed
