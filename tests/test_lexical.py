"""The lexical side of Leiden's graph: TF-IDF + SVD vectors, the cosine mix, and what it adds to clustering."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from clado.pipeline.cluster import ClusterSettings, cluster_vectors
from clado.pipeline.lexical import lexical_vectors, mix_lexical

TOPICS = [
    ("card", "arrival"), ("card", "limit"), ("transfer", "fee"), ("transfer", "pending"),
    ("refund", "missing"), ("refund", "request"), ("pin", "blocked"), ("pin", "change"),
]  # fmt: skip
FILLER = ["please", "help", "me", "with", "my", "the", "today", "again", "now", "quickly", "thanks", "urgent"]


def twin_topics(per: int, *, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Items of 8 topics whose embeddings only know the first word of each topic (4 blobs, each holding two
    topics), while the texts also carry the second word: only the lexical side can tell the twins apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gold = np.repeat(np.arange(len(TOPICS)), per)
    X = centres[gold // 2] + 0.12 * rng.normal(size=(len(gold), 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    texts = [" ".join([*TOPICS[g], *rng.choice(FILLER, size=3, replace=False)]) for g in gold]
    return X.astype(np.float32), texts, gold


def test_lexical_vectors_are_unit_rows_and_deterministic():
    _, texts, _ = twin_topics(10)
    Z = lexical_vectors(texts, dims=16, seed=0)
    assert Z is not None and Z.shape == (len(texts), 16)
    assert np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(Z, lexical_vectors(texts, dims=16, seed=0))


def test_lexical_vectors_need_shared_terms():
    assert lexical_vectors(["alpha", "beta", "gamma"], dims=8, seed=0) is None  # no term in two texts


def test_mix_cosines_are_the_weighted_sum():
    X, texts, _ = twin_topics(5)
    Z = lexical_vectors(texts, dims=16, seed=0)
    M = mix_lexical(X, texts, weight=0.3, dims=16, seed=0)
    assert np.allclose(M @ M.T, 0.7 * (X @ X.T) + 0.3 * (Z @ Z.T), atol=1e-5)


def test_mix_without_weight_or_terms_is_the_embeddings():
    X, texts, _ = twin_topics(5)
    assert mix_lexical(X, texts, weight=0.0, dims=16, seed=0) is X
    few = X[:3]
    assert mix_lexical(few, ["alpha", "beta", "gamma"], weight=0.3, dims=16, seed=0) is few
    with pytest.raises(ValueError, match="2 texts for 40 vectors"):
        mix_lexical(X, texts[:2], weight=0.3, dims=16, seed=0)


def test_lexical_weight_separates_topics_the_embeddings_merge():
    X, texts, gold = twin_topics(40)
    fixed = {"method": "leiden", "resolution": {"leiden_resolution": 1.5}}
    plain = cluster_vectors(X, settings=ClusterSettings(**fixed, graph={"lexical_weight": 0.0}), texts=texts)
    mixed = cluster_vectors(X, settings=ClusterSettings(**fixed, graph={"lexical_weight": 0.3}), texts=texts)
    assert plain.params["lexical"] is False and mixed.params["lexical"] is True
    assert adjusted_rand_score(gold, plain.labels) < 0.6
    assert adjusted_rand_score(gold, mixed.labels) >= 0.9
    again = cluster_vectors(X, settings=ClusterSettings(**fixed, graph={"lexical_weight": 0.3}), texts=texts)
    assert np.array_equal(mixed.labels, again.labels)


def test_cluster_items_hands_the_texts_to_leiden():
    from clado.pipeline.aspects import AspectSettings, cluster_items

    X, texts, gold = twin_topics(40)
    settings = ClusterSettings(method="leiden", resolution={"leiden_resolution": 1.5}, graph={"lexical_weight": 0.3})
    result = cluster_items(X, None, settings=settings, aspects=AspectSettings(), seed=0, texts=texts)
    assert result.params["lexical"] is True
    assert adjusted_rand_score(gold, result.labels) >= 0.9


def test_lexical_side_fitted_on_a_sample_projects_every_text_and_keeps_the_twins_apart():
    _, texts, gold = twin_topics(200)  # 1,600 texts
    Z = lexical_vectors(texts, dims=16, seed=0, fit_max=1000)
    assert Z.shape[0] == len(texts) and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    centroid = np.stack([Z[gold == g].mean(axis=0) for g in range(len(TOPICS))])
    own = np.einsum("ij,ij->i", Z, centroid[gold])
    assert (own > np.max(Z @ centroid.T - 10 * np.eye(len(TOPICS))[gold], axis=1)).mean() > 0.9
    np.testing.assert_allclose(Z, lexical_vectors(texts, dims=16, seed=0, fit_max=1000))
