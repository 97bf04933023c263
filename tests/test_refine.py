"""Post-processing: noise absorption (with and without a reranker), merges, small clusters, medoids."""

import numpy as np

from clado.backends.pair_judge import PairJudge
from clado.pipeline.refine import RefineSettings, refine_clusters


def unit(rows) -> np.ndarray:
    X = np.asarray(rows, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def two_clusters_and_noise() -> tuple[np.ndarray, np.ndarray]:
    """Cluster 0 along e0, cluster 1 along e1, a noise item near e0 (cos ~0.9) and one along e3 (cos 0)."""
    rng = np.random.default_rng(0)
    a = np.eye(6)[0] + 0.05 * rng.normal(size=(10, 6))
    b = np.eye(6)[1] + 0.05 * rng.normal(size=(10, 6))
    near = np.eye(6)[0] + 0.5 * np.eye(6)[2]
    far = np.eye(6)[3]
    X = unit(np.vstack([a, b, near, far]))
    labels = np.array([0] * 10 + [1] * 10 + [-1, -1])
    return X, labels


class FakeReranker:
    """Scores pairs by a fixed answer and records what it was asked."""

    def __init__(self, score: float):
        self.score = score
        self.calls: list[list[tuple[str, str]]] = []

    def score_pairs(self, pairs):
        self.calls.append(list(pairs))
        return [self.score] * len(pairs)


def test_noise_joins_near_cluster_and_far_item_stays_unassigned():
    X, labels = two_clusters_and_noise()
    result = refine_clusters(X, labels, settings=RefineSettings(absorb_threshold=0.6))
    assert result.labels[20] == result.labels[0]
    assert result.labels[21] == -1
    assert result.stats["absorbed"] == 1 and result.stats["remaining_noise"] == 1


def test_absorption_threshold_is_respected():
    X, labels = two_clusters_and_noise()
    result = refine_clusters(X, labels, settings=RefineSettings(absorb_threshold=0.95))
    assert result.labels[20] == -1 and result.stats["absorbed"] == 0


def judge(reranker, n: int, **kwargs) -> PairJudge:
    return PairJudge(reranker, [f"item {i}" for i in range(n)], **kwargs)


def test_reranker_must_agree():
    X, labels = two_clusters_and_noise()
    settings = RefineSettings(absorb_threshold=0.6)
    no = FakeReranker(0.2)
    assert refine_clusters(X, labels, settings=settings, judge=judge(no, len(X))).labels[20] == -1
    assert no.calls and no.calls[0][0][0] == "item 20"
    yes = FakeReranker(0.9)
    assert refine_clusters(X, labels, settings=settings, judge=judge(yes, len(X))).labels[20] >= 0


def test_spent_budget_leaves_the_decision_to_the_embedding():
    X, labels = two_clusters_and_noise()
    no = FakeReranker(0.0)
    result = refine_clusters(
        X, labels, settings=RefineSettings(absorb_threshold=0.6), judge=judge(no, len(X), budget=0)
    )
    assert result.labels[20] == result.labels[0] and no.calls == []
    assert result.stats["rerank"]["pairs_over_budget"] >= 1


def test_near_duplicate_clusters_merge_and_distinct_ones_do_not():
    X, labels = two_clusters_and_noise()
    split = labels.copy()
    split[5:10] = 2  # cluster 0 cut in two halves
    result = refine_clusters(X, split, settings=RefineSettings(merge_threshold=0.95))
    assert result.stats["merged_pairs"] == 1
    assert len(set(result.labels[:10])) == 1
    assert result.labels[0] != result.labels[10]


def test_reranker_can_veto_a_merge():
    X, labels = two_clusters_and_noise()
    split = labels.copy()
    split[5:10] = 2
    result = refine_clusters(
        X, split, settings=RefineSettings(merge_threshold=0.95), judge=judge(FakeReranker(0.1), len(X))
    )
    assert result.stats["merged_pairs"] == 0
    assert len(set(result.labels[:10])) == 2


def test_small_clusters_kept_when_coherent_else_dissolved():
    X, labels = two_clusters_and_noise()
    coherent = labels.copy()
    coherent[10:13] = 5  # three very similar items: a coherent small cluster
    settings = RefineSettings(  # merging off: the small cluster lies inside cluster 1
        small_cluster_size=5, small_cluster_coherence=0.8, absorb_threshold=0.99, merge_threshold=1.1
    )
    kept = refine_clusters(X, coherent, settings=settings)
    assert kept.stats["small_clusters_dissolved"] == 0
    assert len(set(kept.labels[10:13])) == 1 and kept.labels[10] != kept.labels[13]
    incoherent = labels.copy()
    incoherent[[0, 10, 21]] = 7  # three unrelated items
    gone = refine_clusters(X, incoherent, settings=RefineSettings(absorb_threshold=0.6))
    assert gone.stats["small_clusters_dissolved"] == 1
    assert gone.labels[0] == gone.labels[1] and gone.labels[10] == gone.labels[11]  # re-homed by absorption
    assert gone.labels[21] == -1


def test_medoid_is_most_central_member_and_labels_are_renumbered():
    X = unit([[1, 0, 0], [1, 0.1, 0], [1, 0.2, 0], [1, 0.9, 0], [0, 0, 1], [0, 0.1, 1]])
    labels = np.array([4, 4, 4, 4, 9, 9])
    result = refine_clusters(X, labels, settings=RefineSettings(small_cluster_size=2))
    assert result.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert result.medoids[0] == 2
