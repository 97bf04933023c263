"""#18 points 1 and 6: facet answers follow a record's content, default ids survive inserted lines, and exact
duplicates are counted, with their users and times, in every size, share, time count and privacy check."""

import asyncio
import csv
import json
import re
from datetime import UTC, datetime

from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.build_cache import build_key
from clado.pipeline.ingest import IngestSettings, ingest
from clado.taxonomy.export_html import page_data
from clado.taxonomy.privacy import PrivacySettings, apply_privacy
from clado.taxonomy.records import Item, Node, Occurrence, Record, Taxonomy
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm
from tests.test_build import TOPICS, responder

PHRASES = [phrase for texts in TOPICS.values() for phrase in texts]


def review_rows(n: int = 24) -> list[dict]:
    return [{"text": f"{PHRASES[i % len(PHRASES)]} ({i})", "user_id": f"u{i}"} for i in range(n)]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_file(path, out, server):
    """One build of `path` into `out` with the fake model behind `server` and the fake embedder."""
    config = Config()
    config.output.map = False

    async def run():
        with Store(out / "clado.db") as store:
            llm = fake_llm(server, store=store)
            try:
                return await build_async([path], out=out, config=config, store=store, embedder=FakeEmbedder(), llm=llm)
            finally:
                await llm.aclose()

    return asyncio.run(run())


def facet_prompts(server: FakeServer) -> list[str]:
    return [
        b["messages"][-1]["content"] for b in server.history if "items" in b["response_format"]["schema"]["properties"]
    ]


def assert_facets_match_texts(result) -> None:
    """Every item's extracted issue is the text of its own record (the fake model copies it)."""
    for item in result.items.values():
        assert item.facets["issue"] == item.text.split(" (")[0], item


def test_a_changed_text_under_the_same_id_is_extracted_again_and_stored(tmp_path):
    """#18.1: reuse needs the same content, not only the same id; the store keeps the new text."""
    rows = [{"id": f"r{i}", **row} for i, row in enumerate(review_rows())]
    data = write_rows(tmp_path / "reviews.jsonl", rows)
    server = FakeServer(responder=responder)
    build_file(data, tmp_path / "out", server)
    asked = len(facet_prompts(server))
    rows[0]["text"] = "courier lost the parcel (0)"  # was a battery review
    second = build_file(write_rows(data, rows), tmp_path / "out", server)
    new_prompts = facet_prompts(server)[asked:]
    assert len(new_prompts) == 1 and "courier lost the parcel (0)" in new_prompts[0]
    assert second.items["r0#issues#0"].facets["aspect"] == "delivery"
    assert_facets_match_texts(second)
    with Store(tmp_path / "out" / "clado.db") as store:
        assert next(r for r in store.records() if r.id == "r0").text == "courier lost the parcel (0)"


def test_inserting_a_line_keeps_every_default_id_and_every_extraction_right(tmp_path):
    """#18.1: ids without an id field come from the content, so a line inserted at the top moves none."""
    rows = review_rows()
    data = write_rows(tmp_path / "reviews.jsonl", rows)
    before = {r.text: r.id for r in ingest(data, settings=IngestSettings()).records}
    server = FakeServer(responder=responder)
    build_file(data, tmp_path / "out", server)
    asked = len(facet_prompts(server))
    write_rows(data, [{"text": "screen cracked on day one", "user_id": "u99"}, *rows])
    after = {r.text: r.id for r in ingest(data, settings=IngestSettings()).records}
    assert {text: after[text] for text in before} == before
    second = build_file(data, tmp_path / "out", server)
    assert len(facet_prompts(server)) == asked + 1  # only the inserted line is asked
    assert_facets_match_texts(second)


def test_the_nth_repeat_of_a_text_gets_the_nth_occurrence_id(tmp_path):
    """#18.1: a repeated text's rows are told apart by their occurrence number, not by their line."""
    data = tmp_path / "q.txt"
    data.write_text("same\nother\nsame\n", encoding="utf-8")
    first = ingest(data, settings=IngestSettings()).records[0]
    data.write_text("new\nsame\nother\nsame\nsame\n", encoding="utf-8")
    (again,) = [r for r in ingest(data, settings=IngestSettings()).records if r.text == "same"]
    assert again.id == first.id and re.fullmatch(r"q:[0-9a-f]{12}\.1", again.id)
    assert [o.id for o in again.repeats] == [first.id[:-1] + "2", first.id[:-1] + "3"]


def test_the_build_key_changes_with_a_repeat_or_a_user():
    """#18.1/6: the whole-build cache must not answer when only the duplicates or the users changed."""
    record = Record(id="a", text="same", user_id="u1")
    repeated = record.model_copy(update={"repeats": [Occurrence(id="b", user_id="u2")]})
    other_user = record.model_copy(update={"user_id": "u3"})
    keys = {
        build_key([r], config_fingerprint="c", no_llm=False, retry_failed=False) for r in (record, repeated, other_user)
    }
    assert len(keys) == 3


def total_rows(taxonomy: Taxonomy, items: dict[str, Item]) -> int:
    return sum(n.size for n in taxonomy.roots()) + sum(items[m].count for m in taxonomy.unassigned_ids)


def test_duplicates_are_one_item_but_every_row_is_counted_in_sizes_and_exports(tmp_path):
    """#18.6: three rows of one text are clustered once and counted three times everywhere."""
    rows = review_rows()
    rows += [{"text": rows[0]["text"], "user_id": f"dup{k}", "created_at": f"2024-0{k + 2}-01"} for k in range(2)]
    data = write_rows(tmp_path / "reviews.jsonl", rows)
    server = FakeServer(responder=responder)
    result = build_file(data, tmp_path / "out", server)
    prompts = facet_prompts(server)
    assert len(prompts) == 24 and sum(rows[0]["text"] in p for p in prompts) == 1
    (repeated,) = [i for i in result.items.values() if i.text == rows[0]["text"]]
    assert repeated.count == 3 and repeated.user_ids() == {"u0", "dup0", "dup1"}
    assert total_rows(result.taxonomy, result.items) == 26
    leaf = next(n for n in result.taxonomy.leaves() if repeated.id in n.member_ids)
    assert leaf.size == len(leaf.member_ids) + 2
    out = tmp_path / "out"
    body = json.loads((out / "taxonomy.json").read_text())
    assert body["items"][repeated.id]["count"] == 3
    assert (out / "report.md").read_text().splitlines()[2].startswith("26 items from 24 records")
    html = (out / "taxonomy.html").read_text()
    assert '"totals":{"items":26,' in html
    with (out / "assignments.csv").open(newline="", encoding="utf-8") as handle:
        csv_rows = {row["item_id"]: int(row["rows"]) for row in csv.DictReader(handle)}
    assert csv_rows[repeated.id] == 3 and sum(csv_rows.values()) == 26


def test_a_new_duplicate_row_is_not_answered_by_the_build_cache(tmp_path):
    """#18.1/6: appending an exact duplicate (another user) re-runs the build and counts the row."""
    rows = review_rows()
    data = write_rows(tmp_path / "reviews.jsonl", rows)
    server = FakeServer(responder=responder)
    first = build_file(data, tmp_path / "out", server)
    again = build_file(
        write_rows(data, [*rows, {"text": rows[5]["text"], "user_id": "late"}]), tmp_path / "out", server
    )
    assert not again.summary.get("cached")
    assert total_rows(again.taxonomy, again.items) == total_rows(first.taxonomy, first.items) + 1


def repeated_item(item_id: str, users: list[str], days: list[int]) -> Item:
    """An item whose record has len(users) rows, by those users on those days of January 2024."""
    stamps = [datetime(2024, 1, d, tzinfo=UTC) for d in days]
    repeats = [
        Occurrence(id=f"{item_id}-{k}", user_id=u, created_at=t) for k, (u, t) in enumerate(zip(users[1:], stamps[1:]))
    ]
    return Item(id=item_id, record_id=item_id, text=item_id, user_id=users[0], created_at=stamps[0], repeats=repeats)


def one_leaf(items: dict[str, Item]) -> Taxonomy:
    leaf = Node(id="leaf", level=0, name="Leaf", size=len(items), member_ids=list(items))
    return Taxonomy(created_at=datetime(2024, 1, 1, tzinfo=UTC), nodes=[leaf])


def test_the_privacy_threshold_counts_the_users_of_every_occurrence():
    """#18.6: a popular text asked by five users clears min_users=5; today only its first user counted."""
    items = {"a": repeated_item("a", ["u1", "u2", "u3", "u4", "u5"], [1, 2, 3, 4, 5])}
    shown = apply_privacy(one_leaf(items), items, PrivacySettings(enabled=True, min_users=5))
    assert [n.name for n in shown.nodes] == ["Leaf"] and shown.nodes[0].size == 5
    fewer = {"a": repeated_item("a", ["u1", "u1", "u2", "u2", "u3"], [1, 2, 3, 4, 5])}
    folded = apply_privacy(one_leaf(fewer), fewer, PrivacySettings(enabled=True, min_users=5))
    assert "Leaf" not in [n.name for n in folded.nodes]


def test_the_explorer_counts_every_occurrence_over_time_and_in_sizes():
    """#18.6: the time chart bins each occurrence on its own day; node and total sizes count rows."""
    items = {"a": repeated_item("a", ["u1", "u2", "u3"], [1, 1, 3]), "b": repeated_item("b", ["u4"], [2])}
    data = page_data(one_leaf(items), items, title="t", map_png_b64=None, examples_per_node=5)
    assert data["time"]["labels"] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert data["nodes"][0]["time"] == [2, 1, 1] and data["time"]["all"] == [2, 1, 1]
    assert data["nodes"][0]["size"] == 4 and data["totals"]["items"] == 4
