"""Two-stage clustering: aspect canonicalisation, issues clustered per aspect bucket, the aspect-mixed vectors,
and a review build with the LLM judge as reranker."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from clado.backends.embed import EmbedSettings
from clado.config import Config
from clado.pipeline.aspects import (
    AspectSettings,
    aspect_mixed_vectors,
    canonical_aspects,
    cluster_in_buckets,
    cluster_items,
)
from clado.pipeline.build import build_async
from clado.pipeline.cluster import ClusterSettings
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, completion, fake_llm
from tests.test_build import responder as review_responder
from tests.test_build import write_reviews


class CountingCache:
    def __init__(self):
        self.data: dict[str, np.ndarray] = {}

    def get_many(self, keys):
        return {k: self.data[k] for k in keys if k in self.data}

    def put_many(self, items):
        self.data.update(items)


def test_synonyms_merge_and_the_most_frequent_spelling_names_the_bucket():
    aspects = ["Battery life", "battery  LIFE", "Battery life", "life battery", None, "delivery", "  ", "Delivery"]
    embedder = FakeEmbedder()
    buckets = canonical_aspects(aspects, embedder=embedder, cache=CountingCache(), threshold=0.88)
    # "life battery" has the same words as "battery life" (cosine 1 for the bag-of-words embedder)
    assert buckets.names == ["Battery life", "Delivery"]
    assert buckets.bucket_of.tolist() == [0, 0, 0, 0, -1, 1, -1, 1]
    assert buckets.synonyms["life battery"] == "Battery life" and buckets.synonyms["delivery"] == "Delivery"
    assert embedder.texts_embedded == 3  # distinct normalised strings only
    strict = canonical_aspects(aspects, embedder=FakeEmbedder(), cache=None, threshold=1.01)
    assert len(strict.names) == 3


def test_no_aspects_means_no_buckets_and_no_embedding():
    embedder = FakeEmbedder()
    buckets = canonical_aspects([None, None], embedder=embedder, cache=None)
    assert buckets.names == [] and buckets.bucket_of.tolist() == [-1, -1] and embedder.calls == 0


def issues_under_two_aspects() -> tuple[np.ndarray, np.ndarray]:
    """The same two issue blobs ("slow", "broken") said about two aspects, plus a tiny third aspect."""
    rng = np.random.default_rng(0)
    slow, broken = np.eye(8)[0], np.eye(8)[1]
    rows, bucket = [], []
    for aspect in (0, 1):
        for centre in (slow, broken):
            rows.append(centre + 0.05 * rng.normal(size=(6, 8)))
            bucket += [aspect] * 6
    rows.append(np.eye(8)[2] + 0.05 * rng.normal(size=(2, 8)))
    bucket += [2, 2]
    X = np.vstack(rows)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), np.array(bucket)


def test_issues_are_clustered_inside_their_aspect_bucket():
    X, bucket = issues_under_two_aspects()
    settings = ClusterSettings()
    result = cluster_in_buckets(X, bucket, settings=settings, seed=0, min_bucket_size=5)
    labels = result.labels
    groups = [labels[i * 6 : (i + 1) * 6] for i in range(4)]  # (aspect 0, slow), (0, broken), (1, slow), (1, broken)
    assert all(len(set(g.tolist())) == 1 for g in groups)
    assert len({int(g[0]) for g in groups}) == 4  # same issue under another aspect is another cluster
    assert result.params["aspect_buckets"] == 2 and result.params["other_items"] == 2
    assert labels[24] == labels[25] >= 0 and labels[24] not in {int(g[0]) for g in groups}
    again = cluster_in_buckets(X, bucket, settings=settings, seed=0, min_bucket_size=5)
    assert np.array_equal(labels, again.labels)  # deterministic
    across = cluster_items(
        X, None, settings=settings, aspects=AspectSettings(), seed=0
    ).labels  # cross-aspect: issues meet across aspects
    assert across[0] == across[12] and across[6] == across[18]


def test_bucketing_can_be_switched_off():
    X, bucket = issues_under_two_aspects()

    class Buckets:
        bucket_of = bucket

    off = cluster_items(X, Buckets(), settings=ClusterSettings(), aspects=AspectSettings(aspect_buckets=False), seed=0)
    assert off.method != "aspect_buckets" and off.labels[0] == off.labels[12]
    on = cluster_items(X, Buckets(), settings=ClusterSettings(), aspects=AspectSettings(), seed=0)
    assert on.method == "aspect_buckets" and on.labels[0] != on.labels[12]


def test_aspect_mixed_vectors_weight_the_two_parts():
    aspects = ["battery", "battery", "delivery", None]
    buckets = canonical_aspects(aspects, embedder=FakeEmbedder(), cache=None)
    X = np.tile(np.eye(4, dtype=np.float32)[0], (4, 1))  # identical issue vectors
    M = aspect_mixed_vectors(X, buckets, settings=EmbedSettings(issue_weight=0.8, aspect_weight=0.2))
    assert np.allclose(np.linalg.norm(M, axis=1), 1.0)
    assert M[0] @ M[1] == pytest.approx(1.0)
    cos_aspect = float(buckets.vectors[0] @ buckets.vectors[1])
    assert M[0] @ M[2] == pytest.approx((0.64 + 0.04 * cos_aspect) / 0.68, abs=1e-5)
    assert M[0] @ M[3] == pytest.approx(0.8 / math.sqrt(0.68), abs=1e-5)  # no aspect: zero aspect part


def judge_or_review(body: dict):
    """The build's fake model: logprob requests are judge calls (yes when both texts share the aspect line)."""
    if body.get("logprobs"):
        prompt = body["messages"][-1]["content"]
        first, second = (part.split("\n</data>")[0] for part in prompt.split("<data>\n")[1:3])
        same = first.splitlines()[0] == second.splitlines()[0]
        top = {"yes": math.log(0.9 if same else 0.2), "no": math.log(0.1 if same else 0.8)}
        return httpx.Response(200, json=completion("yes", logprobs=top))
    return review_responder(body)


async def test_review_build_uses_aspect_buckets_and_the_llm_judge(tmp_path):
    data = tmp_path / "reviews.jsonl"
    write_reviews(data)
    config = Config()
    config.output.map = False
    config.cluster.rerank.reranker = "llm_judge"
    config.cluster.rerank.rerank_budget = 40
    config.cluster.refine.boundary_margin = 2.0  # every item is a boundary item: the budget must cap the judge
    server = FakeServer(responder=judge_or_review)
    with Store(tmp_path / "out" / "clado.db") as store:
        llm = fake_llm(server, store=store)
        result = await build_async(
            [data], out=tmp_path / "out", config=config, store=store, embedder=FakeEmbedder(), llm=llm
        )
    assert result.summary["cluster_method"] == "aspect_buckets"
    judged = [b for b in server.history if b.get("logprobs")]
    # the budget caps row pairs; the judge asks each distinct text pair once
    assert 0 < len(judged) <= result.summary["refine"]["rerank"]["pairs_scored"] == 40
    assert result.summary["refine"]["rerank"]["pairs_over_budget"] > 0
    for leaf in result.taxonomy.leaves():  # every leaf holds one aspect
        assert len({result.items[m].facets["aspect"] for m in leaf.member_ids}) == 1
