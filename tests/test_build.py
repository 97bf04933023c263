"""The whole build with a fake LLM and a fake embedder: invariants of the tree and of the outputs."""

import asyncio
import json
import random
from collections import Counter
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from clado.agents.labels import ClusterName
from clado.cli import app
from clado.config import Config
from clado.pipeline import build as build_module
from clado.pipeline import refresh as refresh_module
from clado.pipeline.build import build_async
from clado.taxonomy.records import Taxonomy
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm, schema_answer

TOPICS = {
    "battery": ["battery drains fast", "battery died after a day", "battery life is short"],
    "delivery": ["package arrived late", "delivery took weeks", "courier lost the parcel"],
    "sound": ["sound quality is great", "bass sounds amazing", "crisp clear sound"],
    "strap": ["strap broke quickly", "strap snapped off", "the strap tore"],
}


def write_reviews(path, n=48):
    rng = random.Random(0)
    topics = list(TOPICS)
    with path.open("w") as handle:
        for i in range(n):
            topic = topics[i % len(topics)]
            text = rng.choice(TOPICS[topic]) + f" ({i})"
            handle.write(json.dumps({"id": f"r{i}", "text": text, "user_id": f"u{i % 9}"}) + "\n")


def responder(body):
    """Plays a tiny, consistent model: extracts the topic word, names clusters, proposes one parent."""
    schema = body["response_format"]["schema"]
    prompt = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
    props = schema.get("properties", {})
    if "items" in props:
        data = prompt.split("<data>\n")[1].split("\n</data>")[0]
        topic = next((t for t, texts in TOPICS.items() if any(x in data for x in texts)), "other")
        return {"items": [{"aspect": topic, "issue": data.strip().split(" (")[0], "sentiment": "negative"}]}
    return schema_answer(schema, prompt)


def fake_build(tmp_path, *, n=48, server=None, config=None, **facets):
    """Build `n` written reviews into tmp_path/out with the fake model (`server`, default a fresh one) and
    embedder; `config` defaults to Config() (the map is always off), `facets` overrides `config.facets` fields."""
    data = tmp_path / "reviews.jsonl"
    write_reviews(data, n=n)
    config = config or Config()
    config.output.map = False
    for key, value in facets.items():
        setattr(config.facets, key, value)
    server = server or FakeServer(responder=responder)

    async def run():
        with Store(tmp_path / "out" / "clado.db") as store:
            llm = fake_llm(server, store=store)
            return await build_async(
                [data], out=tmp_path / "out", config=config, store=store, embedder=FakeEmbedder(), llm=llm
            )

    return asyncio.run(run())


@pytest.fixture
def built(tmp_path):
    return fake_build(tmp_path), tmp_path / "out"


def test_every_item_is_in_exactly_one_leaf_or_unassigned(built):
    result, _ = built
    tax = result.taxonomy
    leaf_members = Counter(m for leaf in tax.leaves() for m in leaf.member_ids)
    assert all(c == 1 for c in leaf_members.values())
    assert set(leaf_members) | set(tax.unassigned_ids) == set(result.items)
    assert not set(leaf_members) & set(tax.unassigned_ids)


def test_counts_add_up_level_by_level_and_every_node_is_named(built):
    result, _ = built
    tax = result.taxonomy
    assert tax.depth >= 2
    assigned = len(result.items) - len(tax.unassigned_ids)
    for level in range(tax.depth):
        nodes = [n for n in tax.nodes if n.level == level]
        assert sum(n.size for n in nodes) == assigned
    for node in tax.nodes:
        assert node.name.strip()
        kids = tax.children(node.id)
        if node.level > 0:
            assert kids and sum(k.size for k in kids) == node.size
    assert all(n.parent_id is not None for n in tax.nodes if n.level < tax.depth - 1)


def test_outputs_are_written_and_parse(built):
    result, out = built
    body = json.loads((out / "taxonomy.json").read_text())
    body.pop("items")
    assert Taxonomy.model_validate(body).nodes == result.taxonomy.nodes
    parser = HTMLParser()
    parser.feed((out / "taxonomy.html").read_text())
    assert (out / "report.md").read_text().strip()
    rows = (out / "assignments.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(result.items)


def test_summary_counts_inputs(built):
    result, _ = built
    s = result.summary
    assert s["inputs"] == s["records"] + s["duplicates"] + len(s["skipped"]) == 48
    assert s["llm"]["calls"] > 0 and set(s["seconds"]) >= {
        "ingest",
        "extract",
        "embed",
        "cluster",
        "name",
        "hierarchy",
        "export",
    }
    # The LLM requests of each stage add up to the client's count (no stage without one is listed).
    by_stage = s["llm_calls_by_stage"]
    assert {"extract", "name", "hierarchy"} <= set(by_stage) and all(n > 0 for n in by_stage.values())
    assert sum(by_stage.values()) == s["llm"]["calls"]


def test_raw_facet_set_clusters_record_texts_and_still_names_with_the_llm(tmp_path):
    server = FakeServer(responder=responder)
    result = fake_build(tmp_path, n=24, server=server, set="raw")
    lines = (tmp_path / "reviews.jsonl").read_text().splitlines()
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in lines}
    assert {item.record_id: item.text for item in result.items.values()} == texts
    titles = [body["response_format"]["schema"].get("title") for body in server.history]
    assert titles and "ReviewIssues" not in titles, "no extraction call with the raw set"
    assert result.taxonomy.fingerprint["llm_model"] is not None


def test_several_naming_candidates_pick_a_consensus_name_in_the_build(tmp_path):
    """naming.candidates > 1: each cluster is named from three example orders and one of the drafts is kept."""
    server = FakeServer(responder=responder)
    config = Config()
    config.naming.candidates = 3
    result = fake_build(tmp_path, n=24, server=server, config=config)
    namer = [p for p in server.user_prompts() if p.startswith("Below are texts from one group")]
    drafts = {schema_answer(ClusterName.model_json_schema(), p)["name"] for p in namer}
    leaves = result.taxonomy.leaves()
    assert leaves and result.summary["events"]["namer_consensus"] >= len(leaves)
    assert len(set(namer)) > len(leaves), "some cluster is shown its examples in more than one order"
    assert all(leaf.name in drafts for leaf in leaves)


def faulty_responder(body):
    """`responder`, except that record r0's extraction and every cluster name are never valid JSON (each is
    re-asked once, then falls back) and every assignment names an unknown parent (re-asked, then the most similar)."""
    prompt = body["messages"][1]["content"]
    title = body["response_format"]["schema"].get("title")
    if (title == "ReviewIssues" and "(0)" in prompt) or prompt.startswith("Below are texts from one group"):
        return "not json"
    if title == "Assignments":
        return {"assignments": [{"child": 1, "parent": "No such parent"}]}
    return responder(body)


@pytest.fixture(scope="module")
def faulty_build(tmp_path_factory):
    return fake_build(tmp_path_factory.mktemp("faulty"), n=24, server=FakeServer(responder=faulty_responder))


def test_fallbacks_of_facets_namer_and_hierarchy_reach_the_run_summary(faulty_build):
    summary = faulty_build.summary
    events, clusters = summary["events"], summary["clusters"]
    assert events["facet_invalid"] == 1 and list(summary["extraction_errors"]) == ["r0"]
    assert events["namer_invalid_output"] == events["namer_fallback"] == clusters > 0
    assert events["hierarchy_assign_reask"] == events["hierarchy_assign_fallback"] > 0
    assert summary["llm"]["reasks"] == summary["llm"]["invalid"] == 1 + clusters
    assert faulty_build.taxonomy.summary["events"] == events
    assert all(node.name.strip() for node in faulty_build.taxonomy.nodes)


def printed_fallbacks(output: str) -> dict[str, str]:
    """The counts on the CLI's one "re-asks and fallbacks:" line."""
    [line] = [line for line in output.splitlines() if "re-asks and fallbacks:" in line]
    return dict(item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", "))


def test_the_cli_prints_the_fallback_counts(faulty_build, monkeypatch, tmp_path):
    monkeypatch.setattr(build_module, "build", lambda *args, **kwargs: faulty_build)
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "x"}\n')
    result = CliRunner().invoke(app, ["build", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    events = faulty_build.summary["events"]
    assert printed_fallbacks(result.output) == {
        name: str(events[name])
        for name in (
            "facet_invalid",
            "hierarchy_assign_fallback",
            "hierarchy_assign_reask",
            "namer_fallback",
            "namer_invalid_output",
        )
    }


def test_cli_refresh_prints_the_fallback_counts_and_not_an_empty_line(monkeypatch, tmp_path):
    data, config = tmp_path / "in.jsonl", tmp_path / "clado.toml"
    data.write_text('{"text": "x"}\n')
    config.write_text("")
    summary = {"version": 2, "changed": True, "records_new": 1, "records_known": 0}
    events = {"namer_fallback": 2, "hierarchy_assign_reask": 1, "namer_consensus": 4, "facet_invalid": 0}
    results = iter([{**summary, "events": events}, {**summary, "events": {"namer_consensus": 1}}])
    monkeypatch.setattr(refresh_module, "refresh", lambda *args, **kwargs: SimpleNamespace(summary=next(results)))
    args = ["refresh", str(data), "--store", str(tmp_path), "--config", str(config)]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert printed_fallbacks(first.output) == {"hierarchy_assign_reask": "1", "namer_fallback": "2"}
    assert "re-asks and fallbacks" not in second.output


def test_an_unchanged_rebuild_reads_the_stored_build_and_a_naming_change_reuses_the_clustering(tmp_path):
    server = FakeServer(responder=responder)
    first = fake_build(tmp_path, server=server)
    calls = len(server.history)
    again = fake_build(tmp_path, server=server)
    assert again.summary["cached"] and len(server.history) == calls  # no stage re-ran, no LLM request
    assert again.taxonomy.version == first.taxonomy.version and again.taxonomy.nodes == first.taxonomy.nodes
    assert list(again.items) == list(first.items) and (again.vectors == first.vectors).all()
    report = tmp_path / "out" / "report.md"
    report.write_text("edited by hand")
    rebuilt = fake_build(tmp_path, server=server)  # an export no longer the one written: the build runs again
    assert not rebuilt.summary.get("cached") and report.read_text() != "edited by hand"
    assert "cluster" not in rebuilt.summary["seconds"]  # the clustering came from the store
    config = Config()
    config.cluster.graph.knn_k = 5  # a clustering setting: clustered anew
    changed = fake_build(tmp_path, server=server, config=config)
    assert "cluster" in changed.summary["seconds"] and not changed.summary.get("cached")
