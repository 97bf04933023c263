"""Refresh with a fake LLM and a fake embedder: stable IDs, only new records extracted, pool → new leaves,
diffs consistent with the counts, drift, rebuilds with Hungarian ID mapping, edits replayed, CLI exit codes."""

import asyncio
import csv
import json
import shutil
from collections import Counter
from contextlib import asynccontextmanager

import pytest
from typer.testing import CliRunner

from clado.cli import app
from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.failures import ExtractionFailed
from clado.pipeline.refresh import (
    LazyLLM,
    RefreshError,
    edit_store,
    jaccard_matrix,
    map_stable_ids,
    refresh_async,
    split_new,
)
from clado.taxonomy.records import Node, Record, Taxonomy
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm, schema_answer
from tests.test_export_html import DATA_SCRIPT
from tests.test_lock import hold_in_subprocess

TOPICS = {
    "battery": ["battery drains fast", "battery died after a day", "battery life is short"],
    "delivery": ["package arrived late", "delivery took weeks", "courier lost the parcel"],
    "sound": ["sound quality is great", "bass sounds amazing", "crisp clear sound"],
    "strap": ["strap broke quickly", "strap snapped off", "the strap tore"],
    "screen": ["screen cracked easily", "screen flickers constantly", "screen is too dim"],
}
BASE = ["battery", "delivery", "sound", "strap"]


def responder(body):
    """A tiny consistent model: the review's topic as aspect, its text as issue; schema-shaped names."""
    schema = body["response_format"]["schema"]
    prompt = body["messages"][-1]["content"]
    if "items" in schema.get("properties", {}):
        data = prompt.split("<data>\n")[1].split("\n</data>")[0]
        topic = next((t for t, texts in TOPICS.items() if any(x in data for x in texts)), "other")
        return {"items": [{"aspect": topic, "issue": data.strip().split(" (")[0], "sentiment": "negative"}]}
    return schema_answer(schema, prompt)


def facet_requests(server):
    return [b for b in server.history if "items" in b["response_format"]["schema"].get("properties", {})]


def rows(topic, start, n, prefix):
    return [{"id": f"{prefix}{start + i}", "text": f"{TOPICS[topic][i % 3]} ({start + i})"} for i in range(n)]


def base_rows():
    return [{"id": f"r{i}", "text": f"{TOPICS[BASE[i % 4]][(i // 4) % 3]} ({i})"} for i in range(48)]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fake_config():
    config = Config()
    config.output.map = False
    return config


@asynccontextmanager
async def fake_client(server, store):
    client = fake_llm(server, store=store)
    try:
        yield client
    finally:
        await client.aclose()


def build_fake(root):
    """A fake build of 48 reviews over four topics into `root`/out; returns that directory."""
    data = write_jsonl(root / "day1.jsonl", base_rows())

    async def run():
        with Store(root / "out" / "clado.db") as store:
            async with fake_client(FakeServer(responder=responder), store) as llm:
                await build_async(
                    [data], out=root / "out", config=fake_config(), store=store, embedder=FakeEmbedder(), llm=llm
                )

    asyncio.run(run())
    return root / "out"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One fake build, copied by each test that changes it."""
    return build_fake(tmp_path_factory.mktemp("built"))


@pytest.fixture
def project(template, tmp_path):
    shutil.copytree(template, tmp_path / "out")
    return tmp_path / "out"


def run_refresh(out, records=None, *, rebuild=False, server=None, config=None):
    """Refresh the store in `out` with `records` (dicts) through the fakes (`config`: fake_config()); returns
    (result, server)."""
    server = server or FakeServer(responder=responder)
    inputs = (
        [write_jsonl(out.parent / f"new{len(list(out.parent.glob('new*.jsonl')))}.jsonl", records)] if records else []
    )

    async def run():
        with Store(out / "clado.db") as store:
            llm = LazyLLM(lambda: fake_client(server, store))
            try:
                return await refresh_async(
                    inputs, out=out, config=config or fake_config(), store=store, embedder=FakeEmbedder(),
                    llm=llm, rebuild=rebuild,
                )  # fmt: skip
            finally:
                await llm.aclose()

    return asyncio.run(run()), server


def latest(out):
    with Store(out / "clado.db") as store:
        return store.taxonomy()


def check_tree(taxonomy):
    """Every item in at most one leaf, never also unassigned; parents hold exactly their children's members."""
    members = Counter(m for leaf in taxonomy.leaves() for m in leaf.member_ids)
    assert all(c == 1 for c in members.values())
    assert not set(members) & set(taxonomy.unassigned_ids)
    for node in taxonomy.nodes:
        kids = taxonomy.children(node.id)
        assert node.size == len(node.member_ids)
        if node.level > 0:
            assert kids and sorted(m for k in kids for m in k.member_ids) == sorted(node.member_ids)


NEW_DAY = base_rows()[:6] + rows("battery", 100, 4, "n") + rows("sound", 110, 4, "n") + rows("screen", 200, 9, "s")


def test_refresh_keeps_every_id_and_extracts_only_new_records(project):
    before = latest(project)
    result, server = run_refresh(project, NEW_DAY)
    after = result.taxonomy
    s = result.summary
    assert (s["records_in"], s["records_known"], s["records_new"]) == (23, 6, 17)
    extracted = [b["messages"][-1]["content"] for b in facet_requests(server)]
    assert len(extracted) == 17 and not any(f"({i})" in p for p in extracted for i in range(6))
    assert s["llm"]["calls"] == len(server.history)
    index = after.by_id()
    for node in before.nodes:
        assert node.id in index and index[node.id].name == node.name and index[node.id].parent_id == node.parent_id
        assert set(node.member_ids) <= set(index[node.id].member_ids)
    assert after.version == before.version + 1 == latest(project).version
    check_tree(after)


def test_pool_of_a_new_topic_becomes_a_new_leaf_under_an_existing_parent(project):
    before = latest(project)
    result, _ = run_refresh(project, NEW_DAY)
    after, s = result.taxonomy, result.summary
    (added,) = [n for n in after.leaves() if n.id not in before.by_id()]
    assert sorted(added.member_ids) == sorted(f"s{200 + i}#issues#0" for i in range(9))
    assert added.parent_id in {n.id for n in before.nodes if n.level == 1}
    assert (s["items_new"], s["assigned_existing"], s["pooled_new"], s["new_clusters"]) == (17, 8, 9, 1)
    assert s["rebuild_recommended"] and "fit no existing leaf" in s["rebuild_reasons"][0]


def test_diff_agrees_with_the_summary_counts(project):
    before = latest(project)
    result, _ = run_refresh(project, NEW_DAY)
    diff, s = result.diff, result.summary
    leaf_growth = sum(c.delta for c in diff.grown if c.level == 0)
    added_items = sum(n.size for n in diff.added if n.level == 0)
    assert leaf_growth == s["assigned_existing"] + s["joined_existing"]
    assert added_items == sum(n.size for n in result.taxonomy.leaves() if n.id not in before.by_id())
    assert diff.items["new"] - diff.items["old"] == leaf_growth + added_items
    assert not (diff.removed or diff.shrunk or diff.merged or diff.renamed)
    written = json.loads((project / "diff.json").read_text())
    assert written["counts"] == diff.counts() and written["to_version"] == result.taxonomy.version
    assert "## Added" in (project / "diff.md").read_text()


def test_a_second_refresh_with_the_same_file_costs_nothing(project):
    first, _ = run_refresh(project, NEW_DAY)
    again, server = run_refresh(project, NEW_DAY)
    assert server.history == [] and again.summary["changed"] is False
    assert again.summary["records_new"] == 0 and again.summary["llm"] is None
    assert latest(project).version == first.taxonomy.version


def test_items_that_fit_keep_the_tree_and_recommend_no_rebuild(project):
    before = latest(project)
    result, server = run_refresh(project, rows("battery", 300, 2, "b") + rows("strap", 310, 4, "t"))
    s = result.summary
    assert s["assigned_existing"] == 6 and s["new_clusters"] == 0 and not s["rebuild_recommended"]
    assert len(server.history) == 6  # six facet calls, nothing to name
    assert {n.id for n in result.taxonomy.nodes} == {n.id for n in before.nodes}
    assert 0 < s["max_centroid_drift"] < 0.1


def test_a_high_assignment_threshold_from_the_config_file_sends_everything_to_the_pool(project):
    """[refresh] in the TOML reaches the refresh: no new item reaches a cosine of 1.01 to any leaf."""
    toml = project.parent / "clado.toml"
    toml.write_text("[output]\nmap = false\n[refresh]\nassign_threshold = 1.01\n")
    result, _ = run_refresh(project, rows("battery", 300, 6, "b"), config=Config.load(toml))
    s = result.summary
    assert s["assigned_existing"] == 0 and s["pool_share"] == 1.0 and s["rebuild_recommended"]
    # the six new items are near-duplicates of an existing leaf: they join it instead of forming a new one
    assert s["new_clusters"] == 0 and s["joined_existing"] == 6


def test_refresh_needs_a_built_store(tmp_path):
    with Store(tmp_path / "clado.db") as store, pytest.raises(RefreshError, match="no taxonomy yet"):
        asyncio.run(
            refresh_async(
                [],
                out=tmp_path,
                config=fake_config(),
                store=store,
                embedder=FakeEmbedder(),
                llm=None,
            )
        )


def test_a_new_record_reusing_a_stored_id_gets_its_own_id():
    known = {"a": Record(id="a", text="old").content_hash}
    new, seen = split_new([Record(id="a", text="new"), Record(id="b", text="old"), Record(id="c", text="c")], known)
    assert seen == 1 and [r.id for r in new] == [f"a@{Record(id='a', text='new').content_hash[:12]}", "c"]


def node(level, name, members, parent=None):
    return Node(
        id=Node.make_id(level, members), level=level, name=name, member_ids=members, size=len(members), parent_id=parent
    )


def test_hungarian_gives_each_old_id_to_its_best_overlap_only():
    a, b = node(0, "A", ["1", "2", "3", "4"]), node(0, "B", ["5", "6", "7", "8"])
    old = Taxonomy(version=1, created_at="2024-01-01T00:00:00Z", nodes=[a, b])
    # x overlaps A most (J 0.6), y overlaps A less (J 0.2) and B a little (J 0.2 < 0.5): only x is matched
    x, y = node(0, "x", ["1", "2", "3", "9", "10"]), node(0, "y", ["4", "5"])
    parent = node(1, "P", ["1", "2", "3", "4", "5", "9", "10"])
    x.parent_id = y.parent_id = parent.id
    mapped = map_stable_ids(
        old, Taxonomy(version=2, created_at="2024-01-02T00:00:00Z", nodes=[x, y, parent]), min_jaccard=0.5
    )
    ids = {n.name: n.id for n in mapped.nodes}
    assert ids["x"] == a.id and ids["y"] == y.id and ids["P"] == parent.id
    assert all(n.parent_id == parent.id for n in mapped.nodes if n.level == 0)
    assert jaccard_matrix([["1", "2"]], [["2", "3"], []]).tolist() == [[1 / 3, 0.0]]


def test_rebuild_keeps_ids_by_member_overlap_and_replays_edits(project):
    before = latest(project)
    renamed = before.leaves()[0]
    edit_store(project, "rename", [renamed.id, "Analyst name"], embedder=FakeEmbedder())
    result, _ = run_refresh(project, rows("battery", 300, 3, "b"), rebuild=True)
    after = result.taxonomy
    assert result.summary["rebuild"] and result.summary["ids_kept"] > 0
    old_leaves = before.leaves()
    new_leaves = after.leaves()
    J = jaccard_matrix([n.member_ids for n in new_leaves], [n.member_ids for n in old_leaves])
    for r, leaf in enumerate(new_leaves):
        match = [old_leaves[c].id for c in range(len(old_leaves)) if J[r, c] >= 0.5]
        assert leaf.id in match or (not match and leaf.id not in {n.id for n in old_leaves})
    assert after.by_id()[renamed.id].name == "Analyst name"
    assert result.summary["edits"]["applied"] == 1
    check_tree(after)


def test_edits_are_replayed_after_a_refresh(project):
    before = latest(project)
    keep, gone = sorted(before.leaves(), key=lambda n: (-n.size, n.id))[:2]
    edit_store(project, "lock", [keep.id[:8]], embedder=FakeEmbedder())
    edit_store(project, "merge", [keep.id, gone.id], embedder=FakeEmbedder())
    edit_store(project, "rename", [keep.id, "Kept topic"], description="Set by an analyst", embedder=FakeEmbedder())
    result, _ = run_refresh(project, NEW_DAY)
    after = result.taxonomy
    index = after.by_id()
    assert gone.id not in index and index[keep.id].name == "Kept topic"
    assert index[keep.id].description == "Set by an analyst"
    assert set(keep.member_ids + gone.member_ids) <= set(index[keep.id].member_ids)
    assert result.summary["edits"] == {"applied": 3, "skipped": [], "locked": [keep.id], "restored": []}
    check_tree(after)


runner = CliRunner()


def test_cli_exit_codes_and_json_summary(project, tmp_path):
    data = write_jsonl(tmp_path / "day2.jsonl", NEW_DAY)
    missing = runner.invoke(app, ["refresh", "--store", str(tmp_path / "nowhere"), str(data)])
    assert missing.exit_code == 2 and json.loads(missing.stdout.splitlines()[-1])["ok"] is False
    no_input = runner.invoke(app, ["refresh", "--store", str(project)])
    assert no_input.exit_code == 2 and "no input files" in no_input.stdout
    bad_node = runner.invoke(app, ["edit", "--store", str(project), "rename", "no-such-node", "x"])
    assert bad_node.exit_code == 2 and "no node" in json.loads(bad_node.stdout.splitlines()[-1])["error"]
    holder = hold_in_subprocess(project / "clado.db", 30)
    try:
        busy = runner.invoke(app, ["edit", "--store", str(project), "lock", latest(project).nodes[0].id])
    finally:
        holder.kill()
        holder.wait()
    assert busy.exit_code == 3 and json.loads(busy.stdout.splitlines()[-1])["exit_code"] == 3


def test_trends_across_versions_reach_the_html_explorer(project):
    before = latest(project)
    result, _ = run_refresh(project, NEW_DAY)
    trends = result.taxonomy.summary["trends"]
    assert trends["versions"] == [1, 2]
    html = (project / "taxonomy.html").read_text()
    data = json.loads(DATA_SCRIPT.findall(html)[0])
    assert data["versions"] == ["v1", "v2"]
    old_sizes = {n.id: n.size for n in before.nodes}
    for node in data["nodes"]:
        assert node["trend"] == [old_sizes.get(node["id"], 0), node["size"]]
    assert any(n["trend"][0] == 0 for n in data["nodes"]) and any(
        n["trend"][1] > n["trend"][0] > 0 for n in data["nodes"]
    )


def test_cli_diff_prints_markdown_or_json(project):
    result, _ = run_refresh(project, NEW_DAY)
    markdown = runner.invoke(app, ["diff", "--store", str(project)])
    assert markdown.exit_code == 0 and markdown.stdout.startswith("# Taxonomy changes: version 1 → 2")
    as_json = runner.invoke(app, ["diff", "--store", str(project), "--from", "1", "--to", "2", "--json"])
    body = json.loads(as_json.stdout.splitlines()[-1])
    assert body["ok"] and body["counts"] == result.diff.counts()
    missing = runner.invoke(app, ["diff", "--store", str(project), "--from", "7"])
    assert missing.exit_code == 2 and "need two versions" in missing.stdout


def test_a_repeated_text_is_counted_not_dropped_and_counted_once_per_row(project):
    """#18.6: known texts under new ids add rows to their items (sizes grow, no LLM call); the same rows again add none."""
    before = latest(project)
    repeats = [{"id": f"again{i}", "text": row["text"], "user_id": f"n{i}"} for i, row in enumerate(base_rows()[:5])]
    result, server = run_refresh(project, repeats)
    s = result.summary
    assert (s["records_new"], s["repeats_new"], s["changed"]) == (0, 5, True)
    assert facet_requests(server) == []
    assigned = sum(f"r{i}#issues#0" not in before.unassigned_ids for i in range(5))
    assert sum(n.size for n in result.taxonomy.roots()) == sum(n.size for n in before.roots()) + assigned
    with Store(project / "clado.db") as store:
        assert [o.id for o in next(r for r in store.records() if r.id == "r0").repeats] == ["again0"]
    again, _ = run_refresh(project, repeats)
    assert (again.summary["repeats_new"], again.summary["changed"]) == (0, False)


def test_refresh_routes_by_the_stored_calibration_and_fits_a_new_one(project):
    """New items join a leaf only when the stored τ allows it; the new version carries its own calibration, and
    assignments.csv gives every leaf member (and no unassigned item) its probability."""
    with Store(project / "clado.db") as store:
        strict = store.taxonomy()
        strict.calibration = strict.calibration.model_copy(update={"threshold": 1.0})
        strict.version = store.next_version()
        store.put_taxonomy(strict, None)
    result, _ = run_refresh(project, rows("battery", 300, 2, "b") + rows("strap", 310, 4, "t"))
    s, after = result.summary, result.taxonomy
    assert s["assigned_existing"] == 0 and s["pooled_new"] == 6, "nothing reaches a probability of 1"
    calibration = after.calibration
    assert set(calibration.offsets) == {leaf.id for leaf in after.leaves()} and calibration.threshold < 1.0
    assert calibration.fitted_on == sum(leaf.size for leaf in after.leaves())
    with (project / "assignments.csv").open(newline="", encoding="utf-8") as handle:
        confidence = {r["item_id"]: r["confidence"] for r in csv.DictReader(handle)}
    members = {m for leaf in after.leaves() for m in leaf.member_ids}
    assert {i for i, c in confidence.items() if c} == members and set(after.unassigned_ids) <= set(confidence)
    assert all(0.0 < float(confidence[m]) <= 1.0 for m in members)


def test_an_edit_refits_the_calibration_on_the_edited_leaves(project):
    keep, gone = sorted(latest(project).leaves(), key=lambda n: (-n.size, n.id))[:2]
    edit_store(project, "merge", [keep.id, gone.id], embedder=FakeEmbedder())
    after = latest(project)
    assert set(after.calibration.offsets) == {leaf.id for leaf in after.leaves()} and gone.id not in after.by_id()


def test_too_many_failed_new_records_stop_the_refresh_after_writing_the_error_report(project):
    """#18 point 3 in refresh: more than max_failed_share of the new records failing stops it (nothing published,
    the version unchanged, errors.json names them); the next refresh with a working model asks them again."""
    before = latest(project).version
    new = rows("screen", 100, 6, "n")

    def broken(body):  # the facet answers of the new screen reviews never validate; everything else works
        if "items" in body["response_format"]["schema"].get("properties", {}) and "screen" in str(body["messages"]):
            return "not json"
        return responder(body)

    with pytest.raises(ExtractionFailed, match=r"6 of 6 records"):
        run_refresh(project, new, server=FakeServer(responder=broken))
    report = json.loads((project / "errors.json").read_text())
    assert report["failed"] == 6 and {e["record_id"] for e in report["errors"]} == {r["id"] for r in new}
    assert latest(project).version == before
    result, server = run_refresh(project, new)
    assert result.summary["changed"] and result.taxonomy.version == before + 1
    assert len(facet_requests(server)) == 6 and not (project / "errors.json").exists()
