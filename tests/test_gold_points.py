"""The shipped reviews' gold points and the demo scorer (benchmarks/bench_demo.py) built on them."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clado.eval.gold_points import GoldPoint, aligned_point, bracket_siblings, load_gold_points, score_points
from clado.taxonomy.records import Item, Node, Taxonomy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_every_shipped_review_has_gold_points():
    gold = load_gold_points(EXAMPLES / "reviews.gold.jsonl")
    ids = [json.loads(line)["id"] for line in (EXAMPLES / "reviews.jsonl").read_text().splitlines()]
    assert list(gold) == ids and all(gold[i] for i in ids)
    points = [p for ps in gold.values() for p in ps]
    assert {p.sentiment for p in points} <= {"positive", "negative", "neutral"}
    assert all(p.aspect == p.aspect.strip().lower() and p.issue for p in points)


def test_a_broken_gold_line_is_named(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"id": "a", "points": []}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"g.jsonl:2"):
        load_gold_points(path)


def point(aspect, issue, sentiment="negative"):
    return GoldPoint(aspect=aspect, issue=issue, sentiment=sentiment)


def item(record, index, **facets):
    return Item(id=f"{record}#issues#{index}", record_id=record, text=" ".join(facets.values()), facets=facets)


def test_items_align_to_the_point_sharing_their_words_then_to_their_position():
    points = [point("delivery", "late"), point("battery", "drains fast")]
    assert aligned_point(item("r", 0, aspect="battery", issue="dies quickly"), points) == points[1]
    assert aligned_point(item("r", 1, aspect="parcel", issue="arrived"), points) == points[1]  # no words: position
    assert aligned_point(item("r", 0, aspect="shipping", issue="slow"), points) == points[0]
    assert aligned_point(item("r", 3, aspect="x", issue="y"), [points[1]]) == points[1]  # one point: that one


def taxonomy_of(leaves: dict[str, list[str]], parents: dict[str, list[str]], unassigned=()) -> Taxonomy:
    nodes = []
    for name, members in leaves.items():
        nodes.append(Node(id=name, level=0, name=name, member_ids=members))
    for name, children in parents.items():
        members = [m for c in children for m in leaves[c]]
        nodes.append(Node(id=f"p-{name}", level=1, name=name, member_ids=members))
        for node in nodes:
            if node.id in children:
                node.parent_id = f"p-{name}"
    return Taxonomy(created_at=datetime(2026, 1, 1, tzinfo=UTC), nodes=nodes, unassigned_ids=list(unassigned))


def test_scores_purity_shares_and_bracket_siblings():
    gold = {f"r{k}": [point("delivery", "late")] for k in range(4)}
    gold |= {f"b{k}": [point("battery", "drains fast")] for k in range(4)}
    items = {i.id: i for i in (item(r, 0, aspect="a", issue="b") for r in gold)}
    late, battery = [f"r{k}#issues#0" for k in range(4)], [f"b{k}#issues#0" for k in range(4)]
    pure = taxonomy_of({"Late": late, "Battery": battery}, {"Delivery": ["Late"], "Power": ["Battery"]})
    scores = score_points(pure, items, gold)
    assert scores["leaf_purity_issue"] == 1.0 and scores["nmi_issue"] == 1.0 and scores["bracket_siblings"] == []
    assert scores["largest_top_share"] == 0.5 and scores["unassigned_share"] == 0.0
    assert [leaf["majority"] for leaf in scores["leaf_majorities"]] == ["battery / drains fast", "delivery / late"]
    mixed = taxonomy_of(
        {"Issues": late[:3] + battery[:1], "Issues (brew)": battery[1:3]}, {"All": ["Issues", "Issues (brew)"]},
        unassigned=[late[3], battery[3]],
    )  # fmt: skip
    scores = score_points(mixed, items, gold)
    assert scores["leaf_purity_issue"] == pytest.approx((3 / 4 + 1) / 2) and scores["unassigned_share"] == 0.25
    assert scores["largest_top_share"] == 0.75 and scores["bracket_siblings"] == [("Issues", "Issues (brew)")]
    assert bracket_siblings(pure) == []
