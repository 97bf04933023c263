"""Reranker uses in refinement: budgeted pair scoring, threshold calibration, boundary items, the reranker graph,
and the resolution search."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from clado.backends.pair_judge import PairJudge, calibrate_threshold
from clado.pipeline.cluster import ClusterSettings, cluster_vectors, top_m_edges
from clado.pipeline.refine import RefineSettings, absorb_noise, membership_margins, reassign_boundary, refine_clusters
from tests.test_cluster import blobs


def unit(rows) -> np.ndarray:
    X = np.asarray(rows, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class GroupReranker:
    """Says yes (0.9) when two texts carry the same group tag "g<k>:", else no (0.1); records every pair."""

    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    def score_pairs(self, pairs):
        self.pairs.extend(pairs)
        return [0.9 if a.split(":")[0] == b.split(":")[0] else 0.1 for a, b in pairs]


def test_pair_judge_caches_and_respects_the_budget():
    reranker = GroupReranker()
    judge = PairJudge(reranker, ["g0: a", "g0: b", "g1: c", "g1: d"], threshold=0.5, budget=3)
    assert judge.scores([(0, 1), (0, 2), (0, 1)]) == [0.9, 0.1, 0.9]
    assert len(reranker.pairs) == 2
    assert judge.agree([(0, 1), (2, 3), (1, 3)]) == [True, True, None]  # third new pair is over budget
    assert len(reranker.pairs) == 3 and judge.remaining == 0
    assert judge.stats() == {"pairs_scored": 3, "pairs_over_budget": 1, "threshold": 0.5}
    sub = judge.on_rows([2, 3])
    assert sub.texts == ["g1: c", "g1: d"] and sub.scores([(0, 1)]) == [0.9]  # shared cache: no new call
    assert len(reranker.pairs) == 3


def test_calibrate_threshold_f1_and_youden():
    scores = [0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9]
    same = [False, False, True, False, True, True, False, True]
    # F1 at t=0.35: tp 4, fp 2, fn 0 -> 0.8 (best); Youden at 0.6: 3/4 - 1/4 = 0.5, at 0.35: 1 - 2/4 = 0.5 (tie -> higher t)
    assert calibrate_threshold(scores, same) == 0.35
    assert calibrate_threshold(scores, same, criterion="youden") == 0.6
    assert calibrate_threshold([0.2, 0.9], [False, True]) == 0.9
    with pytest.raises(ValueError, match="both"):
        calibrate_threshold([0.2, 0.9], [True, True])
    with pytest.raises(ValueError, match="as many"):
        calibrate_threshold([0.2], [True, False])


def two_groups_with_a_straddler() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clusters around e0 and e1; row 10 sits between them, in cluster 0 by a small margin, but belongs to group 1."""
    rng = np.random.default_rng(0)
    a = np.eye(4)[0] + 0.05 * rng.normal(size=(5, 4))
    b = np.eye(4)[1] + 0.05 * rng.normal(size=(5, 4))
    straddler = np.eye(4)[0] * 0.9 + np.eye(4)[1]
    X = unit(np.vstack([a, b, straddler]))
    labels = np.array([0] * 5 + [1] * 5 + [0])
    texts = [f"g0: {i}" for i in range(5)] + [f"g1: {i}" for i in range(5)] + ["g1: straddler"]
    return X, labels, texts


def test_margins_flag_the_straddler_only():
    X, labels, _ = two_groups_with_a_straddler()
    ids, sims, margin = membership_margins(X, labels)
    assert list(ids) == [0, 1] and sims.shape == (11, 2)
    assert 0 <= margin[10] < 0.05
    assert (margin[:10] > 0.5).all()
    noisy = labels.copy()
    noisy[3] = -1
    assert membership_margins(X, noisy)[2][3] == -np.inf


def test_boundary_item_moves_when_the_reranker_prefers_the_other_medoid():
    X, labels, texts = two_groups_with_a_straddler()
    reranker = GroupReranker()
    settings = RefineSettings(boundary_margin=0.05, boundary_candidates=2)
    out, moved = reassign_boundary(X, labels, settings=settings, judge=PairJudge(reranker, texts))
    assert moved == 1 and out[10] == 1 and (out[:10] == labels[:10]).all()
    assert {a for a, _ in reranker.pairs} == {"g1: straddler"}  # confident items are never scored
    agreeing = [f"g0: {t}" for t in texts]  # the reranker now puts everything together: no reason to move
    same, none_moved = reassign_boundary(X, labels, settings=settings, judge=PairJudge(GroupReranker(), agreeing))
    assert none_moved == 0 and (same == labels).all()


def test_noise_joins_the_candidate_cluster_the_reranker_confirms():
    X, labels, texts = two_groups_with_a_straddler()
    labels = labels.copy()
    labels[10] = -1
    settings = RefineSettings(absorb_threshold=0.5, boundary_candidates=2)
    assert absorb_noise(X, labels, settings=settings)[0][10] == 1  # embedding alone: nearest centroid
    second = texts[:10] + ["g0: straddler"]  # the reranker prefers the second-nearest cluster
    out, absorbed = absorb_noise(X, labels, settings=settings, judge=PairJudge(GroupReranker(), second))
    assert absorbed == 1 and out[10] == 0
    refused = texts[:10] + ["g9: straddler"]
    out, absorbed = absorb_noise(X, labels, settings=settings, judge=PairJudge(GroupReranker(), refused))
    assert absorbed == 0 and out[10] == -1


def test_refine_reports_boundary_moves_and_rerank_stats():
    X, labels, texts = two_groups_with_a_straddler()
    settings = RefineSettings(boundary_margin=0.05, small_cluster_size=2, merge_threshold=1.1)
    result = refine_clusters(X, labels, settings=settings, judge=PairJudge(GroupReranker(), texts))
    assert result.stats["boundary_moved"] == 1 and result.stats["rerank"]["pairs_scored"] == 2
    assert result.labels[10] == result.labels[5] != result.labels[0]


def test_top_m_edges_keeps_the_best_edges_of_each_endpoint():
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
    scores = [0.9, 0.8, 0.7, 0.4, None]
    edges = top_m_edges(pairs, scores, threshold=0.5, m=1)
    # node 0 keeps (0,1); node 2 keeps (0,2); node 3 keeps (0,3); (1,2) is below t; (2,3) unscored
    assert edges == {(0, 1): 0.9, (0, 2): 0.8, (0, 3): 0.7}
    assert top_m_edges(pairs, scores, threshold=0.75, m=5) == {(0, 1): 0.9, (0, 2): 0.8}


def test_rerank_leiden_follows_the_reranker_within_the_budget():
    X, gold = blobs(4, 30, spread=0.5, seed=2)  # blurry blobs: the embedding alone mixes them
    texts = [f"g{g}: item {i}" for i, g in enumerate(gold)]
    reranker = GroupReranker()
    judge = PairJudge(reranker, texts, threshold=0.5, budget=900)
    settings = ClusterSettings(
        method="rerank_leiden", rerank={"rerank_knn_k": 8}, resolution={"leiden_resolution": 1.0}
    )
    result = cluster_vectors(X, settings=settings, judge=judge)
    assert result.method == "rerank_leiden"
    assert len(reranker.pairs) <= 900 and len(reranker.pairs) < len(X) * (len(X) - 1) // 2 / 4
    assigned = result.labels >= 0
    assert assigned.mean() >= 0.9
    assert adjusted_rand_score(gold[assigned], result.labels[assigned]) >= 0.95
    embedding_only = cluster_vectors(
        X, settings=ClusterSettings(method="leiden", resolution={"leiden_resolution": 1.0})
    )
    assert adjusted_rand_score(gold, embedding_only.labels) < 0.9
    with pytest.raises(ValueError, match="needs a reranker"):
        cluster_vectors(X, settings=settings)


def test_resolution_search_recovers_blobs_and_stops_early():
    X, gold = blobs(8, 40)
    result = cluster_vectors(X, settings=ClusterSettings(method="leiden", resolution={"leiden_resolution": "search"}))
    assert adjusted_rand_score(gold, result.labels) >= 0.9
    assert 1 <= result.params["resolutions_tried"] <= 13
    strict = ClusterSettings(
        method="leiden", resolution={"leiden_resolution": "search", "search_min_median_size": 1000}
    )
    assert cluster_vectors(X, settings=strict).params["resolution"] == 1.0
