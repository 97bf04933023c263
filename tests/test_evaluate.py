"""`evaluate` in full mode with a fake LLM: top-level scores for clado's hierarchy and for the Ward baseline."""

import json
from contextlib import asynccontextmanager

from clado.config import Config
from clado.eval import evaluate as evaluate_module
from clado.eval.evaluate import evaluate, format_report
from tests.fakes import FakeEmbedder, FakeServer, fake_llm, schema_answer

DOMAINS = {
    "power": {"battery": ["battery drains fast", "battery died", "battery is weak"],
              "charger": ["charger broke", "charger is slow", "charger cable frayed"]},
    "shipping": {"late": ["package arrived late", "delivery took weeks", "parcel was late"],
                 "lost": ["courier lost the parcel", "parcel never came", "box went missing"]},
}  # fmt: skip


def write_labelled(path):
    with path.open("w") as handle:
        for i in range(48):
            domain = list(DOMAINS)[i % 2]
            label = list(DOMAINS[domain])[(i // 2) % 2]
            text = DOMAINS[domain][label][(i // 4) % 3] + f" #{i}"
            handle.write(json.dumps({"id": str(i), "text": text, "label": label, "parent": domain}) + "\n")


def test_full_mode_scores_the_llm_tree_and_the_ward_tree_on_the_same_leaves(tmp_path, monkeypatch):
    data = tmp_path / "labelled.jsonl"
    write_labelled(data)
    server = FakeServer(
        responder=lambda body: schema_answer(body["response_format"]["schema"], body["messages"][-1]["content"])
    )

    @asynccontextmanager
    async def fake_client(settings, *, seed, store):
        yield fake_llm(server, store=store, seed=seed)

    monkeypatch.setattr(evaluate_module, "llm_client", fake_client)
    monkeypatch.setattr(evaluate_module, "make_embedder", lambda settings: FakeEmbedder())
    config = Config()
    config.facets.set = "raw"
    report = evaluate(data, labels="label", parent_field="parent", config=config, baselines=False)

    assert report["mode"] == "full" and report["n"] == 48
    assert server.history, "the LLM named the clusters"
    clado_top, ward_top = report["top"], report["top_baselines"]["scipy_ward"]
    for top in (clado_top, ward_top):
        assert set(top) >= {"nmi", "ari", "acc", "n_clusters", "tree_consistency"}
        assert 0.0 <= top["tree_consistency"] <= 1.0
    # Both trees stand on the same leaves: the same items are assigned, so the same share is unassigned.
    assert ward_top["unassigned_share"] == clado_top["unassigned_share"]
    table = format_report(report)
    assert "scipy_ward top" in table and "scipy_ward tree consistency" in table
    assert f"top node {report['top_nodes'][0]['name']!r}" in table
    # The top nodes are listed with their names, largest first, and account for every assigned record.
    nodes = report["top_nodes"]
    assert [n["records"] for n in nodes] == sorted((n["records"] for n in nodes), reverse=True)
    assert sum(n["records"] for n in nodes) == round(48 * (1 - clado_top["unassigned_share"]))
    assert len(nodes) == clado_top["n_clusters"] and all(n["name"].strip() for n in nodes)
    assert all(n["main_gold"] in DOMAINS and 0.5 <= n["main_gold_share"] <= 1.0 for n in nodes), (
        "shares of the gold parents"
    )
