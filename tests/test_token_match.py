"""Token matching: the IDF-weighted BERTScore F of text pairs and the kNN graph it re-scores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

import clado.pipeline.cluster as cluster_module
from clado.backends.embed import EmbedSettings, SentenceTransformerEmbedder
from clado.backends.idf_pooling import IdfPooledEmbedder, fit_token_stats
from clado.backends.token_match import TokenMatcher, token_matcher
from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.cluster import ClusterSettings, cluster_vectors, items_token_matcher, token_matched_knn
from clado.pipeline.knn import exact_knn
from clado.pipeline.refresh import refresh_async
from clado.taxonomy.store import Store

E1, E2, E3 = np.eye(3, dtype=np.float32)


def matcher(rows: list[list[tuple[np.ndarray, float]]]) -> TokenMatcher:
    return TokenMatcher.from_texts(
        [(np.array([v for v, _ in row]).reshape(len(row), 3), np.array([w for _, w in row])) for row in rows]
    )


def test_f_is_the_harmonic_mean_of_idf_weighted_recall_and_precision():
    # a = {e1: 1, e2: 3}, b = {e1: 2}: recall 1/4 (e2 finds nothing in b), precision 1, F = 0.4.
    m = matcher([[(E1, 1.0), (E2, 3.0)], [(E1, 2.0)], [(E3, 1.0)]])
    np.testing.assert_allclose(
        m.scores(np.array([0, 1, 0, 2]), np.array([1, 0, 0, 2])), [0.4, 0.4, 1.0, 1.0], atol=1e-6
    )
    assert m.scores(np.array([0]), np.array([2]))[0] == pytest.approx(0.0)  # orthogonal: no match
    opposite = matcher([[(E1, 1.0)], [(-0.1 * E1 + E2, 1.0)]])  # both directions below 0: 0, not a huge ratio
    assert opposite.scores(np.array([0]), np.array([1]))[0] == pytest.approx(0.0)


def test_a_text_without_tokens_scores_zero_and_bad_offsets_raise():
    empty = matcher([[(E1, 1.0)], []])
    assert len(empty) == 2 and empty.scores(np.array([0, 1]), np.array([1, 0])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="disagree"):
        TokenMatcher(empty.tokens, empty.weights, np.array([0, 2]))


def test_scores_per_pair_match_a_direct_computation_and_subsets_keep_rows():
    rng = np.random.default_rng(0)
    rows = [(rng.normal(size=(int(L), 8)), rng.uniform(0.5, 2, size=int(L))) for L in rng.integers(1, 6, size=6)]
    m = TokenMatcher.from_texts(rows)

    def direct(i: int, j: int) -> float:
        (ta, wa), (tb, wb) = m.text(i), m.text(j)
        sims = ta.astype(np.float64) @ tb.astype(np.float64).T
        r, p = sims.max(1) @ wa / wa.sum(), sims.max(0) @ wb / wb.sum()
        r, p = max(r, 0), max(p, 0)
        return 2 * r * p / max(r + p, 1e-9)

    a, b = np.tile(np.arange(6), 6), np.repeat(np.arange(6), 6)  # anchors interleaved: grouping must keep pair order
    got = m.scores(a, b)
    np.testing.assert_allclose(got, [direct(i, j) for i, j in zip(a, b)], atol=1e-5)
    full = got.reshape(6, 6)
    np.testing.assert_allclose(full, full.T, atol=1e-6)  # F is symmetric
    np.testing.assert_allclose(np.diag(full), 1.0, atol=1e-3)
    sub = m.on_rows(np.array([4, 1]))
    assert sub.scores(np.array([0]), np.array([1]))[0] == pytest.approx(full[1, 4], abs=1e-6)


def test_token_matching_reorders_the_neighbours_it_is_weighted_for():
    """Item 0's nearest by cosine is 1, but its tokens match 2's: weight 1 picks 2, weight 0 is plain cosine."""
    X = np.array([[1, 0], [0.99, 0.141], [0.95, 0.312], [0, 1]], dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    m = matcher([[(E1, 1.0)], [(E2, 1.0)], [(E1, 1.0)], [(E3, 1.0)]])
    plain_idx, plain_dist = exact_knn(X, 2)
    idx, dist = token_matched_knn(X, m, k=1, candidates=3, weight=0.0)
    np.testing.assert_array_equal(idx, plain_idx)
    np.testing.assert_allclose(dist, plain_dist, atol=1e-6)
    idx, dist = token_matched_knn(X, m, k=1, candidates=3, weight=1.0)
    assert idx[0].tolist() == [0, 2] and dist[0].tolist() == [0.0, 0.0]
    idx, _ = token_matched_knn(X, m, k=1, candidates=1, weight=1.0)
    assert idx[0].tolist() == [0, 1]  # only the candidates are re-scored


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedSettings())


TEXTS = ["my top up is still pending", "the top up was reverted", "card payment still pending", "hi"]


def test_matcher_of_real_minilm_tokens(minilm):
    tokenizer = minilm.model.tokenizer
    embedder = IdfPooledEmbedder(minilm, fit_token_stats(TEXTS, tokenizer), weight=0.5, power=0.5)
    m = token_matcher(embedder, TEXTS, max_tokens=5)
    assert m is not None and len(m) == 4 and m.tokens.shape[1] == 384
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert np.diff(m.offsets).tolist() == [min(c, 5) for c in counts]  # special tokens left out, capped
    assert (m.weights > 0).all()
    np.testing.assert_allclose(np.linalg.norm(m.tokens.astype(np.float32), axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(m.scores(np.arange(4), np.arange(4)), 1.0, atol=1e-2)
    pending = m.scores(np.array([0, 0]), np.array([2, 3]))
    assert pending[0] > pending[1]  # "still pending" is shared with the card text, nothing with "hi"
    assert token_matcher(minilm, TEXTS, max_tokens=5) is None  # needs the IDF-pooled embedder's stats


def test_items_matcher_only_when_leiden_may_use_it(minilm):
    embedder = IdfPooledEmbedder(minilm, fit_token_stats(TEXTS, minilm.model.tokenizer), weight=0.5, power=0.5)
    assert items_token_matcher(embedder, TEXTS, ClusterSettings(method="leiden")) is not None
    assert items_token_matcher(embedder, TEXTS, ClusterSettings()) is None  # auto: agglomerative below small_input
    assert items_token_matcher(embedder, TEXTS, ClusterSettings(method="auto", small_input=4)) is not None
    assert (
        items_token_matcher(embedder, TEXTS, ClusterSettings(method="leiden", graph={"token_match_weight": 0})) is None
    )
    assert items_token_matcher(embedder, TEXTS, ClusterSettings(method="hdbscan")) is None


def test_leiden_uses_the_matcher_deterministically_and_reports_it():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(c, 0.05, size=(30, 8)) for c in np.eye(8)[:3]]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    m = TokenMatcher.from_texts([(np.repeat(x[None, :3], 2, axis=0), np.ones(2)) for x in X])
    settings = ClusterSettings(method="leiden")
    on = cluster_vectors(X, settings=settings, tokens=m)
    assert on.params["token_match"] is True
    np.testing.assert_array_equal(cluster_vectors(X, settings=settings, tokens=m).labels, on.labels)  # deterministic
    blob = np.repeat(np.arange(3), 30)
    assert all(len(set(blob[on.labels == c])) == 1 for c in set(on.labels.tolist()))  # no cluster spans two blobs
    assert cluster_vectors(X, settings=settings).params["token_match"] is False
    off = cluster_vectors(X, settings=ClusterSettings(method="leiden", graph={"token_match_weight": 0}), tokens=m)
    assert off.params["token_match"] is False


def test_a_leiden_build_and_its_refresh_match_tokens_of_their_items(minilm, tmp_path, monkeypatch):
    """The build hands its items' matcher to Leiden, a refresh its pool's (spied on); neither with it off."""
    calls: list[int] = []
    real = cluster_module.token_matched_knn

    def spy(X, tokens, **kw):
        calls.append(len(tokens))
        return real(X, tokens, **kw)

    monkeypatch.setattr(cluster_module, "token_matched_knn", spy)
    texts = [f"{w} {s}" for w in ("refund", "delivery", "battery") for s in ("late", "broken", "slow", "again", "now")]
    news = [f"the garden {w} needs {s}" for w in ("hose", "fence", "shed") for s in ("paint", "repair", "water")]

    def write(name: str, rows: list[str]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"id": f"{name}{i}", "text": t}) + "\n" for i, t in enumerate(rows)))
        return path

    def build_and_refresh(weight: float):
        config = Config()
        config.output.map = False
        config.cluster = ClusterSettings(method="leiden", graph={"token_match_weight": weight})
        out = tmp_path / f"out{weight}"
        with Store(out / "clado.db") as store:
            kw = {"out": out, "config": config, "store": store, "embedder": minilm, "llm": None}
            asyncio.run(build_async([write("in.jsonl", texts)], no_llm=True, **kw))
            return asyncio.run(refresh_async([write("new.jsonl", news)], **kw))

    refreshed = build_and_refresh(0.5)
    assert calls[0] == len(texts)
    assert len(calls) == 2 and calls[1] >= len(news), refreshed.summary  # the pool: at least the garden texts
    build_and_refresh(0.0)
    assert len(calls) == 2
