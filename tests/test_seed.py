"""One seed: the config's `seed` feeds every random choice (the kNN graph and Leiden, naming and hierarchy
shuffles, the LLM's sampling seed), and changing it changes the outcome where the outcome is random."""

import json
from contextlib import asynccontextmanager

import numpy as np

from clado.config import Config
from clado.pipeline import build as build_module
from clado.pipeline.cluster import ClusterSettings, cluster_vectors
from tests.fakes import FakeEmbedder, FakeServer, fake_llm, schema_answer

LEIDEN = ClusterSettings(method="leiden", resolution={"leiden_resolution": 1.0})


def structureless(n: int = 240, dim: int = 16) -> np.ndarray:
    """Random unit vectors: no partition is better than another, so Leiden's seed decides between them."""
    X = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_the_seed_decides_a_random_partition_and_the_same_seed_repeats_it():
    X = structureless()
    a, b, again = (cluster_vectors(X, settings=LEIDEN, seed=s).labels for s in (0, 1, 1))
    assert not np.array_equal(a, b)
    assert np.array_equal(b, again)


def write_random_texts(path, n: int = 240) -> None:
    """Texts of random words: the fake embedder's vectors have no topic structure."""
    rng = np.random.default_rng(3)
    words = [f"word{i:02d}" for i in range(80)]
    path.write_text(
        "".join(json.dumps({"id": str(i), "text": " ".join(rng.choice(words, 4))}) + "\n" for i in range(n))
    )


def test_the_config_seed_reaches_the_llm_the_clustering_the_namer_and_the_hierarchy(tmp_path, monkeypatch):
    data = tmp_path / "texts.jsonl"
    write_random_texts(data)
    server = FakeServer(
        responder=lambda body: schema_answer(body["response_format"]["schema"], body["messages"][-1]["content"])
    )
    seen: dict[str, list[int]] = {"llm_client": [], "name_clusters": [], "build_hierarchy": []}

    @asynccontextmanager
    async def fake_client(settings, *, seed, store):
        seen["llm_client"].append(seed)
        yield fake_llm(server, store=store, seed=seed)

    def spy(name, original):
        async def wrapper(*args, **kwargs):
            seen[name].append(kwargs["seed"])
            return await original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(build_module, "llm_client", fake_client)
    monkeypatch.setattr(build_module, "make_embedder", lambda settings: FakeEmbedder())
    monkeypatch.setattr(build_module, "name_clusters", spy("name_clusters", build_module.name_clusters))
    monkeypatch.setattr(build_module, "build_hierarchy", spy("build_hierarchy", build_module.build_hierarchy))
    partitions = {}
    for seed in (5, 6):
        config = Config(seed=seed)
        config.facets.set = "raw"
        config.output.map = False
        config.cluster = LEIDEN
        server.history.clear()
        result = build_module.build([data], out=tmp_path / f"out{seed}", config=config)
        assert server.history and {body["seed"] for body in server.history} == {seed}
        partitions[seed] = {frozenset(leaf.member_ids) for leaf in result.taxonomy.leaves()}
    assert seen == {"llm_client": [5, 6], "name_clusters": [5, 6], "build_hierarchy": [5, 6]}
    assert partitions[5] != partitions[6]  # the clustering followed the seed too
