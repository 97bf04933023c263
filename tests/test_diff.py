"""Diffs between hand-built taxonomy versions: every kind of change is found, once, with the right counts."""

import json

from clado.taxonomy.diff import diff_markdown, diff_taxonomies, write_diff
from clado.taxonomy.records import Node, Taxonomy
from clado.taxonomy.staging import staged_files


def items(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


def tree(version, leaves, parents, unassigned=()):
    """leaves: {key: (name, members, parent key)}, parents: {key: name}; ids are the keys."""
    nodes = [
        Node(id=k, level=0, name=name, member_ids=m, size=len(m), parent_id=p) for k, (name, m, p) in leaves.items()
    ]
    for key, name in parents.items():
        members = sorted(m for n in nodes if n.parent_id == key for m in n.member_ids)
        nodes.append(Node(id=key, level=1, name=name, member_ids=members, size=len(members)))
    return Taxonomy(version=version, created_at="2024-01-01T00:00:00Z", nodes=nodes, unassigned_ids=list(unassigned))


OLD = tree(
    1,
    {
        "grow": ("Battery", items("b", 10), "P"),
        "shrink": ("Delivery", items("d", 10), "P"),
        "rename": ("Sound", items("s", 5), "Q"),
        "move": ("Strap", items("t", 4), "Q"),
        "merge": ("Charging", items("c", 6), "P"),
        "split": ("Screen", items("x", 10), "Q"),
        "carve": ("Billing", items("i", 10), "Q"),
        "gone": ("Colour", items("o", 3), "Q"),
    },
    {"P": "Hardware", "Q": "Other things"},
)
NEW = tree(
    2,
    {
        "grow": ("Battery", items("b", 14) + items("c", 6), "P"),  # +4, and the items of "Charging"
        "shrink": ("Delivery", items("d", 7), "P"),  # -3 (to unassigned)
        "rename": ("Sound quality", items("s", 5), "Q"),
        "move": ("Strap", items("t", 4), "P"),
        "split1": ("Cracked screen", items("x", 5), "Q"),
        "split2": ("Dim screen", [f"x{i}" for i in range(5, 10)], "Q"),
        "carve": ("Billing", items("i", 7), "Q"),
        "carved": ("Refunds", [f"i{i}" for i in range(7, 10)], "Q"),
    },
    {"P": "Hardware", "Q": "Other things"},
    unassigned=["d7", "d8", "d9", "o0", "o1", "o2"],
)


def test_every_kind_of_change_is_reported():
    diff = diff_taxonomies(OLD, NEW)
    assert [n.name for n in diff.added] == ["Cracked screen", "Dim screen", "Refunds"]
    assert {c.name: (c.old_size, c.size, c.delta) for c in diff.grown} == {
        "Battery": (10, 20, 10),
        "Hardware": (26, 31, 5),
    }
    assert {c.name: c.delta for c in diff.shrunk} == {"Delivery": -3, "Other things": -7, "Billing": -3}
    assert [(r.old_name, r.new_name) for r in diff.renamed] == [("Sound", "Sound quality")]
    (moved,) = diff.moved
    assert (moved.name, moved.old_parent.name, moved.new_parent.name) == ("Strap", "Other things", "Hardware")
    (merged,) = diff.merged
    assert (merged.name, merged.into.name, merged.into.share) == ("Charging", "Battery", 1.0)
    splits = {s.name: (s.kept, [(p.name, p.share) for p in s.into]) for s in diff.split}
    assert splits == {
        "Screen": (False, [("Cracked screen", 0.5), ("Dim screen", 0.5)]),
        "Billing": (True, [("Refunds", 0.3)]),
    }
    assert [n.name for n in diff.removed] == ["Colour"]
    assert diff.items == {"old": 58, "new": 56} and diff.unassigned == {"old": 0, "new": 6}


def test_each_vanished_node_is_counted_once():
    diff = diff_taxonomies(OLD, NEW)
    vanished = [n.id for n in diff.removed] + [m.id for m in diff.merged] + [s.id for s in diff.split if not s.kept]
    assert sorted(vanished) == sorted({n.id for n in OLD.nodes} - {n.id for n in NEW.nodes})


def test_identical_versions_have_no_changes():
    diff = diff_taxonomies(OLD, OLD.model_copy(update={"version": 2}))
    assert not any(diff.counts().values())
    assert "No node changed." in diff_markdown(diff)


def test_a_minority_share_is_removed_not_merged():
    old = tree(1, {"a": ("A", items("a", 4), None), "z": ("Z", items("z", 10), None)}, {})
    new = tree(2, {"z": ("Z", items("z", 10) + ["a0", "a1"], None)}, {}, unassigned=["a2", "a3"])
    diff = diff_taxonomies(old, new)
    assert [n.name for n in diff.removed] == ["A"] and not diff.merged and not diff.split


def test_json_and_markdown_are_written(tmp_path):
    diff = diff_taxonomies(OLD, NEW)
    with staged_files(tmp_path) as staged:
        paths = write_diff(diff, staged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.json", "diff.md"]
    body = json.loads(paths["diff_json"].read_text())
    assert body["counts"] == diff.counts() == {
        "added": 3, "removed": 1, "grown": 2, "shrunk": 3, "renamed": 1, "moved": 1, "merged": 1, "split": 2
    }  # fmt: skip
    text = paths["diff_md"].read_text()
    assert text.startswith("# Taxonomy changes: version 1 → 2")
    for heading in (
        "## Added",
        "## Grown",
        "## Shrunk",
        "## Renamed",
        "## Moved",
        "## Merged",
        "## Split",
        "## Removed",
    ):
        assert heading in text
    assert "Charging (6 items) → Battery (100% of its items)" in text


def test_markdown_escapes_node_names():
    old = tree(1, {"a": ("A", items("a", 2), None)}, {})
    new = tree(2, {"a": ("<b>*A*</b>\nline", items("a", 2), None)}, {})
    text = diff_markdown(diff_taxonomies(old, new))
    assert "<b>" not in text and "\\*A\\*" in text and "line" in text.split("## Renamed")[1].splitlines()[2]
