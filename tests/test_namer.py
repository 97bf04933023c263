"""Cluster naming: prompt contents, noise, fallbacks, truncation, unique names, consensus."""

from collections import Counter

import httpx
import numpy as np
import pytest

from clado.agents.namer import (
    CONTRAST_CLUSTERS,
    NamingSettings,
    cluster_members,
    contrast_candidates,
    contrast_examples,
    diverse_examples,
    name_clusters,
)
from tests.fakes import FakeEmbedder, FakeServer, fake_llm

TEXTS = [
    "battery drains overnight",
    "battery dies after an hour",
    "battery will not charge",
    "battery swollen after a month",
    "screen cracked on arrival",
    "screen flickers when dim",
    "screen has dead pixels",
    "parcel arrived two weeks late",
    "parcel lost by the courier",
    "zebra noise unrelated words",
]
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1])
MEDOIDS = {0: 1, 1: 5, 2: 7}
TOPICS = {"battery": "Battery life problems", "screen": "Screen defects", "parcel": "Late or lost parcels"}


def group_block(prompt: str) -> str:
    """The first <data> block of a naming prompt: the cluster's own examples."""
    return prompt.split("<data>", 1)[1].split("</data>", 1)[0]


def topic_of(prompt: str) -> str:
    block = group_block(prompt)
    return max(TOPICS, key=block.count)


def by_topic(body: dict) -> dict:
    topic = topic_of(body["messages"][1]["content"])
    return {"name": TOPICS[topic], "description": f"Complaints about {topic}. Not about other parts."}


def vectors(texts=TEXTS) -> np.ndarray:
    return FakeEmbedder().embed(texts)


async def run(server, settings=None, **kwargs):
    events = Counter()
    names = await name_clusters(
        TEXTS, vectors(), LABELS, MEDOIDS, llm=fake_llm(server, max_retries=0), settings=settings or NamingSettings(),
        events=events, **kwargs,
    )  # fmt: skip
    return names, events


async def test_every_cluster_is_named_and_noise_never():
    """Labels >= 0 are named from their own examples; the noise text appears in no prompt."""
    server = FakeServer(responder=by_topic)
    names, events = await run(server)
    assert {c: n.name for c, n in names.items()} == {0: TOPICS["battery"], 1: TOPICS["screen"], 2: TOPICS["parcel"]}
    assert len(server.history) == 3 and not events
    assert all("zebra" not in p for p in server.user_prompts())


async def test_prompt_shows_medoid_first_and_nearest_other_clusters_as_contrast():
    """Own examples start with the medoid; contrast examples come from other clusters only, within <data>."""
    server = FakeServer(responder=by_topic)
    await run(server, NamingSettings(contrast=2))
    prompt = next(p for p in server.user_prompts() if topic_of(p) == "screen")
    own = group_block(prompt)
    assert own.strip().splitlines()[0] == "- screen flickers when dim"
    assert "parcel" not in own and "battery" not in own
    contrast = prompt.split("<data>")[2].split("</data>")[0]
    assert len(contrast.strip().splitlines()) == 2 and "screen" not in contrast


async def test_examples_are_capped_and_cut():
    """At most `examples` members are shown, each cut to `max_example_chars`."""
    server = FakeServer(responder=by_topic)
    await run(server, NamingSettings(examples=2, max_example_chars=20, contrast=0))
    prompt = next(p for p in server.user_prompts() if topic_of(p) == "battery")
    lines = group_block(prompt).strip().splitlines()
    assert lines == ["- battery dies after…", "- battery will not ch…"]
    assert "nearby groups" not in prompt


async def test_invalid_json_twice_falls_back_to_the_given_name():
    """Two unusable answers for a cluster give its fallback name; the other clusters keep the LLM's."""

    def responder(body):
        prompt = body["messages"][1]["content"]
        return "not json" if topic_of(prompt) == "screen" else by_topic(body)

    server = FakeServer(responder=responder)
    names, events = await run(server, fallback_names={0: "kw battery", 1: "kw screen", 2: "kw parcel"})
    assert names[1].name == "kw screen" and names[1].description.startswith("Items mentioning screen")
    assert names[0].name == TOPICS["battery"]
    assert events["namer_fallback"] == 1 and events["namer_invalid_output"] == 1


async def test_transport_failure_falls_back_to_keywords():
    """A server that keeps failing yields keyword names for every cluster, never an exception."""
    server = FakeServer(responder=lambda body: httpx.Response(503, json={"error": "down"}))
    names, events = await run(server)
    assert (
        names[0].name.startswith("Battery")
        and names[1].name.startswith("Screen")
        and names[2].name.startswith("Parcel")
    )
    assert events["namer_fallback"] == 3 and events["namer_transport_error"] == 3


async def test_empty_name_falls_back_and_empty_description_is_filled():
    def responder(body):
        topic = topic_of(body["messages"][1]["content"])
        if topic == "battery":
            return {"name": "  ", "description": "x"}
        return {"name": TOPICS[topic], "description": "" if topic == "screen" else "d"}

    names, events = await run(FakeServer(responder=responder))
    assert names[0].name.startswith("Battery") and names[1].description.startswith("Items mentioning screen")
    assert events["namer_empty_name"] == 1 and events["namer_fallback"] == 1 and events["namer_empty_description"] == 1


async def test_long_names_are_truncated_and_counted():
    def responder(body):
        answer = by_topic(body)
        return answer | {"name": answer["name"] + " and many more words than allowed here"}

    names, events = await run(FakeServer(responder=responder), NamingSettings(max_words=4))
    assert all(len(n.name.split()) <= 4 for n in names.values())
    assert names[0].name == "Battery life problems and"
    assert events["namer_truncated"] == 3


async def test_clashing_names_are_reasked_with_taken_names():
    """A repeated name is re-asked once with the taken names listed; the larger cluster keeps the name."""

    def responder(body):
        prompt = body["messages"][1]["content"]
        if "already used" in prompt:
            return {"name": "Late parcel deliveries", "description": "d"}
        return {"name": "Product problems", "description": "d"}

    server = FakeServer(responder=responder)
    names, events = await run(server)
    assert names[0].name == "Product problems"  # largest cluster keeps it
    assert names[1].name == "Late parcel deliveries"  # both re-asked clusters answered this; the larger keeps it
    assert "parcel" in names[2].name.lower() and names[2].name != names[1].name and "(" not in names[2].name
    reasks = [p for p in server.user_prompts() if "already used" in p]
    assert len(reasks) == 2 and all("- Product problems" in p for p in reasks)
    assert events["namer_clash_reask"] == 2 and events["namer_clash_keyword_name"] == 1


async def test_clash_that_persists_is_named_from_the_clusters_distinctive_words():
    """Colliding answers for all three clusters: the largest keeps the name, the others are named from their own
    distinctive words (screen, parcel), not the repeated name with a bracketed suffix."""
    server = FakeServer(responder=lambda body: {"name": "Same", "description": "d"})
    names, events = await run(server)
    assert names[0].name == "Same"
    assert "screen" in names[1].name.lower() and "parcel" in names[2].name.lower()
    assert not any("same" in names[c].name.lower() or "(" in names[c].name for c in (1, 2))
    assert events["namer_clash_reask"] == 2 and events["namer_clash_keyword_name"] == 2


async def test_consensus_keeps_the_draft_closest_to_the_others():
    """With 3 candidates, the odd draft loses to the two that agree; each draw sees another example order."""
    answers = iter(["Battery dies fast", "Battery dies quickly", "Unrelated zebra name"] * 3)

    def responder(body):
        return {"name": next(answers), "description": "battery"}

    server = FakeServer(responder=responder)
    settings = NamingSettings(candidates=3)
    events = Counter()
    names = await name_clusters(
        TEXTS[:4] + TEXTS[9:], vectors(TEXTS[:4] + TEXTS[9:]), np.array([0, 0, 0, 0, -1]), {0: 1},
        llm=fake_llm(server), settings=settings, events=events, embedder=FakeEmbedder(),
    )  # fmt: skip
    assert names[0].name in {"Battery dies fast", "Battery dies quickly"}
    assert events["namer_consensus"] == 1 and len(server.history) == 3
    assert len({group_block(p) for p in server.user_prompts()}) == 3


async def test_candidates_above_one_need_an_embedder():
    with pytest.raises(ValueError, match="embedder"):
        await run(FakeServer(), NamingSettings(candidates=2))


async def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        await name_clusters(
            TEXTS,
            vectors(),
            LABELS[:3],
            MEDOIDS,
            llm=fake_llm(FakeServer()),
            settings=NamingSettings(),
            events=Counter(),
        )


def test_diverse_examples_start_at_the_medoid_and_spread_out():
    """Farthest-point sampling: after the medoid comes the member least like it; duplicates are skipped."""
    texts = ["a", "a copy", "far", "a"]
    unit = np.array([[1, 0], [0.99, 0.141], [0, 1], [1, 0]], dtype=np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    picked = diverse_examples(unit, np.array([0, 1, 2, 3]), 0, n=10, texts=texts)
    assert picked == [0, 2, 1]
    assert diverse_examples(unit, np.array([0, 1, 2, 3]), None, n=1, texts=texts) in ([0], [1], [3])


def test_contrast_examples_are_nearest_other_clusters_without_noise():
    unit = vectors()
    picked = contrast_examples(unit, LABELS, 1, m=3, texts=TEXTS)
    assert len(picked) == 3 and all(LABELS[i] not in (1, -1) for i in picked)
    centroid = unit[LABELS == 1].mean(axis=0)
    others = [i for i in range(len(TEXTS)) if LABELS[i] not in (1, -1)]
    best = sorted(others, key=lambda i: -float(unit[i] @ centroid))[:3]
    assert sorted(picked) == sorted(best)


async def test_clusters_below_the_size_floor_get_keyword_names_without_a_call():
    """min_share 0.3 of 10 items is a floor of 3: the 2-item parcel cluster is below it, so no prompt is about it,
    it keeps a keyword name, and it is counted."""
    server = FakeServer(responder=by_topic)
    names, events = await run(server, NamingSettings(min_share=0.3))
    asked = [topic_of(body["messages"][1]["content"]) for body in server.history]
    assert sorted(asked) == ["battery", "screen"]
    assert names[0].name == TOPICS["battery"] and names[1].name == TOPICS["screen"]
    assert "parcel" in names[2].name.lower() and events["namer_below_floor"] == 1
    assert len({n.name for n in names.values()}) == 3


def test_grouped_members_equal_one_pass_per_label():
    labels = np.random.default_rng(0).integers(-1, 40, size=5000)
    members = cluster_members(labels)
    assert set(members) == set(range(40))
    for c, rows in members.items():
        assert np.array_equal(rows, np.flatnonzero(labels == c))


def test_contrast_from_the_nearest_clusters_matches_the_exact_ranking_on_separated_blobs():
    """Above CONTRAST_EXACT_ITEMS the candidates are the members of the nearest clusters by centroid: on blobs they
    hold the exact nearest other-cluster items, and no candidate is from a far cluster."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, 16))
    labels = np.repeat(np.arange(60), 50)
    X = centres[labels] + rng.normal(scale=0.3, size=(len(labels), 16))
    unit_vectors = X / np.linalg.norm(X, axis=1, keepdims=True)
    texts = [f"t{i}" for i in range(len(labels))]
    members = cluster_members(labels)
    candidates = contrast_candidates(unit_vectors, members)
    for c in range(0, 60, 7):
        assert len(candidates[c]) == CONTRAST_CLUSTERS * 50 and not set(candidates[c]) & set(members[c].tolist())
        exact = contrast_examples(unit_vectors, labels, c, m=8, texts=texts)
        bounded = contrast_examples(unit_vectors, labels, c, m=8, texts=texts, rows=candidates[c])
        assert bounded == exact
