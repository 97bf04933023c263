"""taxonomy.json, assignments.csv and report.md from a small hand-built taxonomy with hostile texts."""

import csv
import json
import re
from datetime import UTC, datetime

from clado.taxonomy.export_csv import assignment_header, write_assignments_csv
from clado.taxonomy.export_html import write_html
from clado.taxonomy.export_json import write_json
from clado.taxonomy.export_markdown import escape_markdown, one_line, write_markdown
from clado.taxonomy.privacy import OTHER_NAME, PrivacySettings
from clado.taxonomy.records import Item, Node, Taxonomy

SCRIPT_BREAKOUT = "</script><script>window.pwned=1</script>"
IMG_ONERROR = '<img src=x onerror="window.pwned=1">'
LINE_SEPARATOR = "before\u2028after"

# leaf name → (parent name, [(item id, user, text)])
LEAVES = {
    "Refund requests": (
        "Billing",
        [
            ("i1", "u1", "I want my money back"),
            ("i2", "u2", "Refund the duplicate charge"),
            ("i3", "u3", SCRIPT_BREAKOUT),
        ],
    ),
    "Declined cards": ("Billing", [("i4", "u4", IMG_ONERROR), ("i5", "u4", "Card declined at checkout")]),
    "Flight changes": (
        "Travel",
        [
            ("i6", "u1", "Move my flight to Friday"),
            ("i7", "u5", "Change the return date"),
            ("i8", "u6", "Rebook after a cancellation"),
        ],
    ),
    "Lost luggage": ("Luggage", [("i10", "u7", "My bag never arrived")]),
}
UNASSIGNED = [("i9", "u8", LINE_SEPARATOR)]


def sample_taxonomy() -> tuple[Taxonomy, dict[str, Item]]:
    """Three top-level nodes over four leaves, ten items (one unassigned), hostile texts included."""
    items: dict[str, Item] = {}
    leaves: list[Node] = []
    for k, (leaf_name, (_, members)) in enumerate(LEAVES.items()):
        for j, (item_id, user, text) in enumerate(members):
            items[item_id] = Item(
                id=item_id,
                record_id=f"r{item_id[1:]}",
                text=text,
                user_id=user,
                facets={"request": text[:20], "stars": j + 1},
                created_at=datetime(2024, 1 + k, 1 + 7 * j, tzinfo=UTC),
                x=float(k) + 0.1 * j,
                y=float(j),
            )
        ids = [m[0] for m in members]
        leaves.append(
            Node(
                id=Node.make_id(0, ids),
                level=0,
                name=leaf_name,
                description=f"Items about {leaf_name.lower()}",
                size=len(ids),
                member_ids=ids,
                keywords=[leaf_name.split()[0].lower()],
                medoid_id=ids[-1],
            )
        )
    for item_id, user, text in UNASSIGNED:
        items[item_id] = Item(
            id=item_id,
            record_id="r9",
            text=text,
            user_id=user,
            x=5.0,
            y=5.0,
            created_at=datetime(2024, 2, 2, tzinfo=UTC),
        )
    tops: list[Node] = []
    for top_name in dict.fromkeys(parent for parent, _ in LEAVES.values()):
        children = [leaf for leaf in leaves if LEAVES[leaf.name][0] == top_name]
        ids = [m for child in children for m in child.member_ids]
        top = Node(
            id=Node.make_id(1, ids),
            level=1,
            name=top_name,
            description=f"{top_name} <b>&amp;</b> more",
            size=len(ids),
            member_ids=ids,
        )
        for child in children:
            child.parent_id = top.id
        tops.append(top)
    taxonomy = Taxonomy(
        created_at=datetime(2024, 6, 1, tzinfo=UTC),
        fingerprint={"embedder": "minilm", "llm": "qwen"},
        nodes=tops + leaves,
        unassigned_ids=[u[0] for u in UNASSIGNED],
    )
    return taxonomy, items


def test_json_round_trips_through_the_taxonomy_model(tmp_path):
    """taxonomy.json validates as a Taxonomy once `items` is dropped, and keeps every item's text."""
    taxonomy, items = sample_taxonomy()
    body = json.loads(write_json(taxonomy, items, tmp_path / "taxonomy.json").read_text(encoding="utf-8"))
    assert body.pop("items") == {
        m: {"text": i.text, "record_id": i.record_id, "facets": i.facets, "count": i.count} for m, i in items.items()
    }
    assert Taxonomy.model_validate(body) == taxonomy


def test_csv_has_one_row_per_item_with_every_level(tmp_path):
    """Each item gets its leaf and top-level node; the unassigned item has empty node columns."""
    taxonomy, items = sample_taxonomy()
    path = write_assignments_csv(taxonomy, items, tmp_path / "a.csv", confidence={"i1": 0.9})
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert (
        list(rows[0])
        == assignment_header(2)
        == ["item_id", "record_id", "rows", "level0_id", "level0_name", "level1_id", "level1_name", "confidence"]
    )
    assert [r["item_id"] for r in rows] == list(items)
    by_item = {r["item_id"]: r for r in rows}
    index = taxonomy.by_id()
    for leaf in taxonomy.leaves():
        for m in leaf.member_ids:
            assert (by_item[m]["level0_id"], by_item[m]["level0_name"]) == (leaf.id, leaf.name)
            assert by_item[m]["level1_name"] == index[leaf.parent_id].name
    assert by_item["i3"]["level0_name"] == "Refund requests" and by_item["i3"]["record_id"] == "r3"
    assert [by_item["i9"][c] for c in ("level0_id", "level0_name", "level1_id", "level1_name")] == ["", "", "", ""]
    assert by_item["i1"]["confidence"] == "0.9000" and by_item["i2"]["confidence"] == ""


def test_markdown_counts_shares_and_escaped_quotes(tmp_path):
    """Every node is listed with its size and share of all ten items; quotes are escaped single lines."""
    taxonomy, items = sample_taxonomy()
    text = write_markdown(taxonomy, items, tmp_path / "report.md", title="Support <tickets>").read_text(
        encoding="utf-8"
    )
    assert "# Support \\<tickets\\>" in text
    assert "- **Billing** — 5 items (50.0%)" in text
    assert "  - **Refund requests** — 3 items (30.0%)" in text
    assert "- **Luggage** — 1 item (10.0%)" in text
    assert "**Unassigned:** 1 item (10.0%)" in text
    assert not re.search(r"(?<!\\)[<>&]", text) and "\u2028" not in text
    assert "“\\</script\\>\\<script\\>window.pwned=1\\</script\\>”" in text
    refund_block = text.split("**Refund requests**")[1].split("**Declined cards**")[0]
    assert refund_block.count("“") == 3 and refund_block.index("\\</script") < refund_block.index("money back")


def test_markdown_with_privacy_hides_small_groups(tmp_path):
    """Under privacy, folded topics disappear, their items are counted under "Other", and Other has no quotes."""
    taxonomy, items = sample_taxonomy()
    text = write_markdown(
        taxonomy, items, tmp_path / "report.md", privacy=PrivacySettings(enabled=True, min_users=2)
    ).read_text(encoding="utf-8")
    assert "Lost luggage" not in text and "Luggage" not in text and "bag never arrived" not in text
    assert f"- **{escape_markdown(OTHER_NAME)}** — 1 item (10.0%)" in text
    assert "Declined cards" not in text and "Card declined" not in text
    assert "_examples hidden (below the privacy threshold)_" in text


def test_one_line_collapses_and_truncates():
    """Line breaks of every kind become spaces and long texts end with an ellipsis at the limit."""
    assert one_line("a\nb\u2028c\u2029d\r\ne", 200) == "a b c d e"
    cut = one_line("word " * 100, 200)
    assert len(cut) == 200 and cut.endswith("…")


def test_exports_handle_a_taxonomy_with_no_nodes(tmp_path):
    """Everything unassigned: no level columns, zero-node report, and a page that still writes."""
    _, items = sample_taxonomy()
    empty = Taxonomy(created_at=datetime(2024, 6, 1, tzinfo=UTC), nodes=[], unassigned_ids=list(items))
    with write_assignments_csv(empty, items, tmp_path / "a.csv").open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["item_id", "record_id", "rows", "confidence"]
    assert "**Unassigned:** 10 items (100.0%)" in write_markdown(empty, items, tmp_path / "r.md").read_text(
        encoding="utf-8"
    )
    private = PrivacySettings(enabled=True, min_users=2)
    assert write_html(empty, items, tmp_path / "t.html", title="Empty", privacy=private).stat().st_size > 0


def test_csv_cells_never_start_a_spreadsheet_formula(tmp_path):
    """Ids and LLM-written names starting with = + - @ tab or CR get a leading quote (OWASP); others stay as is."""
    taxonomy, items = sample_taxonomy()
    hostile = {"i1": "=HYPERLINK(\"http://x\")", "i2": "+1+cmd|' /C calc'!A0", "i4": "-2+3", "i5": "@SUM(A1)",
               "i6": "\tx", "i7": "\r=1"}  # fmt: skip
    for item_id, record_id in hostile.items():
        items[item_id].record_id = record_id
    leaf = taxonomy.leaves()[0]
    leaf.name = "=cmd|'/C calc'!A0"
    path = write_assignments_csv(taxonomy, items, tmp_path / "a.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        by_item = {r["item_id"]: r for r in csv.DictReader(handle)}
    assert {i: by_item[i]["record_id"] for i in hostile} == {i: "'" + r for i, r in hostile.items()}
    assert {by_item[m]["level0_name"] for m in leaf.member_ids} == {"'=cmd|'/C calc'!A0"}
    assert by_item["i8"]["record_id"] == "r8" and by_item["i8"]["level1_name"] == "Travel"
