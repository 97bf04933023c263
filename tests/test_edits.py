"""Analyst edits on hand-built taxonomies: each operation, its refusals, and replay on a rebuilt tree."""

import pytest

from clado.taxonomy.edits import EditError, apply_edit, make_edit, recompute_members, replay_edits, resolve_node
from clado.taxonomy.records import Node, Taxonomy

IDS = {"battery": "aaaaaaaa-1", "charging": "bbbbbbbb-1", "delivery": "cccccccc-1", "refund": "dddddddd-1",
       "hardware": "eeeeeeee-1", "orders": "ffffffff-1"}  # fmt: skip


def items(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


def sample(version=1):
    leaves = [
        Node(id=IDS["battery"], level=0, name="Battery", member_ids=items("b", 6), parent_id=IDS["hardware"]),
        Node(id=IDS["charging"], level=0, name="Charging", member_ids=items("c", 4), parent_id=IDS["hardware"]),
        Node(id=IDS["delivery"], level=0, name="Delivery", member_ids=items("d", 5), parent_id=IDS["orders"]),
        Node(id=IDS["refund"], level=0, name="Refunds", member_ids=items("r", 3), parent_id=IDS["orders"]),
    ]
    parents = [Node(id=IDS["hardware"], level=1, name="Hardware"), Node(id=IDS["orders"], level=1, name="Orders")]
    return Taxonomy(version=version, created_at="2024-01-01T00:00:00Z", nodes=recompute_members(leaves + parents),
                    unassigned_ids=["u0"])  # fmt: skip


def edit(taxonomy, op, *params, locked=frozenset(), description=None):
    args = make_edit(taxonomy, op, list(params), description=description)
    return apply_edit(taxonomy, op, args, locked=set(locked)), args


def sizes(taxonomy):
    return {n.name: n.size for n in taxonomy.nodes}


def test_recompute_sets_parent_members_and_drops_empty_nodes():
    tax = sample()
    assert sizes(tax) == {"Battery": 6, "Charging": 4, "Delivery": 5, "Refunds": 3, "Hardware": 10, "Orders": 8}
    emptied = [
        n.model_copy(update={"member_ids": []}) if n.level == 0 and n.parent_id == IDS["orders"] else n
        for n in tax.nodes
    ]
    assert [n.name for n in recompute_members(emptied)] == ["Battery", "Charging", "Hardware"]


def test_rename_with_a_unique_prefix():
    renamed, args = edit(sample(), "rename", "aaaaaaaa", "  Battery   life ", description="Runs down fast")
    node = renamed.by_id()[IDS["battery"]]
    assert (node.name, node.description) == ("Battery life", "Runs down fast") and args["node"] == IDS["battery"]


def test_merge_moves_members_and_updates_both_parents():
    merged, args = edit(sample(), "merge", IDS["delivery"], IDS["charging"])
    index = merged.by_id()
    assert IDS["charging"] not in index
    assert sorted(index[IDS["delivery"]].member_ids) == sorted(items("c", 4) + items("d", 5))
    assert sizes(merged)["Hardware"] == 6 and sizes(merged)["Orders"] == 12
    assert args["members"] == items("c", 4) and args["level"] == 0


def test_merging_parents_adopts_the_children():
    merged, _ = edit(sample(), "merge", IDS["hardware"], IDS["orders"])
    assert {n.parent_id for n in merged.leaves()} == {IDS["hardware"]} and sizes(merged)["Hardware"] == 18


def test_move_changes_parent_sizes():
    moved, _ = edit(sample(), "move", IDS["refund"], IDS["hardware"])
    assert moved.by_id()[IDS["refund"]].parent_id == IDS["hardware"]
    assert sizes(moved)["Hardware"] == 13 and sizes(moved)["Orders"] == 5


@pytest.mark.parametrize(
    ("op", "params", "message"),
    [
        ("move", [IDS["refund"], IDS["battery"]], "cannot hold"),
        ("merge", [IDS["battery"], IDS["hardware"]], "merge nodes of one level"),
        ("merge", [IDS["battery"], IDS["battery"]], "into itself"),
        ("rename", ["nope-nope", "x"], "no node"),
        ("rename", ["aaa", "x"], "no node"),  # prefixes shorter than six characters are not resolved
        ("rename", [IDS["battery"]], "usage"),
        ("split", [IDS["battery"]], "unknown edit"),
    ],
)
def test_bad_edits_are_refused(op, params, message):
    with pytest.raises(EditError, match=message):
        edit(sample(), op, *params)


def test_ambiguous_prefix_is_refused():
    tax = sample()
    tax.nodes.append(Node(id="aaaaaaaa-2", level=0, name="Twin", member_ids=["z"], parent_id=IDS["hardware"]))
    with pytest.raises(EditError, match="ambiguous"):
        resolve_node(tax, "aaaaaaaa")


def test_a_locked_node_cannot_be_merged_away():
    with pytest.raises(EditError, match="locked"):
        edit(sample(), "merge", IDS["battery"], IDS["charging"], locked={IDS["charging"]})
    merged, _ = edit(sample(), "merge", IDS["charging"], IDS["battery"], locked={IDS["charging"]})
    assert sizes(merged)["Charging"] == 10


def record(tax, op, *params, seq, description=None):
    return {"seq": seq, "op": op, "args": make_edit(tax, op, list(params), description=description)}


def rebuilt():
    """A rebuild of `sample()` after which charging got its own new id back, battery and refunds dissolved."""
    leaves = [
        Node(id="new-charging", level=0, name="Chargers", member_ids=items("c", 4) + ["b5"], parent_id=IDS["hardware"]),
        Node(
            id=IDS["battery"],
            level=0,
            name="Power",
            member_ids=items("b", 5) + items("r", 2),
            parent_id=IDS["hardware"],
        ),
        Node(id=IDS["delivery"], level=0, name="Shipping", member_ids=items("d", 5) + ["r2"], parent_id=IDS["orders"]),
    ]
    parents = [Node(id=IDS["hardware"], level=1, name="Devices"), Node(id=IDS["orders"], level=1, name="Orders")]
    return Taxonomy(version=3, created_at="2024-01-03T00:00:00Z", nodes=recompute_members(leaves + parents))


def test_replay_on_a_rebuilt_tree_renames_merges_by_overlap_and_restores_locks():
    tax = sample()
    edits = [
        record(tax, "rename", IDS["hardware"], "Hardware", seq=1),
        record(tax, "merge", IDS["battery"], IDS["charging"], seq=2),
        record(tax, "lock", IDS["refund"], seq=3),
        record(tax, "move", IDS["delivery"], IDS["hardware"], seq=4),
    ]
    replayed, report = replay_edits(rebuilt(), edits, min_jaccard=0.5)
    index = replayed.by_id()
    assert index[IDS["hardware"]].name == "Hardware"
    assert "new-charging" not in index and set(items("c", 4)) <= set(index[IDS["battery"]].member_ids)
    restored = index[IDS["refund"]]
    assert (restored.name, sorted(restored.member_ids), restored.parent_id) == (
        "Refunds",
        items("r", 3),
        IDS["hardware"],
    )
    assert not set(items("r", 3)) & {m for n in replayed.leaves() if n.id != IDS["refund"] for m in n.member_ids}
    assert (
        index[IDS["delivery"]].parent_id == IDS["hardware"] and IDS["orders"] not in index
    )  # Orders lost its last child
    assert report == {"applied": 4, "skipped": [], "locked": [IDS["refund"]], "restored": [IDS["refund"]]}
    total = sum(n.size for n in replayed.leaves())
    assert total == 18 and sum(n.size for n in replayed.nodes if n.level == 1) == total


def test_replay_reports_edits_that_no_longer_apply():
    tax = sample()
    edits = [
        record(tax, "rename", IDS["refund"], "Money back", seq=7),
        record(tax, "move", IDS["refund"], IDS["hardware"], seq=8),
    ]
    gone = Taxonomy(version=2, created_at="2024-01-02T00:00:00Z", nodes=[n for n in tax.nodes if n.id != IDS["refund"]])
    replayed, report = replay_edits(gone, edits, min_jaccard=0.5)
    assert [s["seq"] for s in report["skipped"]] == [7, 8] and report["applied"] == 0
    assert sizes(replayed) == sizes(gone)


def test_replaying_merges_that_are_in_effect_changes_nothing():
    tax = sample()
    merge = record(tax, "merge", IDS["battery"], IDS["charging"], seq=1)
    once = apply_edit(tax, "merge", merge["args"], locked=set())
    again, report = replay_edits(once, [merge], min_jaccard=0.5)
    assert again.nodes == once.nodes and report["skipped"] == []
