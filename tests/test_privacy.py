"""Privacy folding: small nodes disappear, their items stay counted, and every level still adds up."""

import random
from datetime import UTC, datetime

import pytest

from clado.taxonomy.privacy import (
    OTHER_NAME,
    PrivacySettings,
    apply_privacy,
    hidden_example_ids,
    unassigned_examples_hidden,
)
from clado.taxonomy.records import Item, Node, Taxonomy
from tests.test_exports import sample_taxonomy


def random_taxonomy(seed: int, *, with_users: bool = True) -> tuple[Taxonomy, dict[str, Item]]:
    """A 3-level tree of random shape over 120 items with skewed user ids; 10 items unassigned."""
    rng = random.Random(seed)
    items = {
        f"i{k}": Item(
            id=f"i{k}",
            record_id=f"r{k}",
            text=f"text {k}",
            user_id=f"u{int(rng.paretovariate(1.2)) % 40}" if with_users else None,
        )
        for k in range(120)
    }
    ids = list(items)
    rng.shuffle(ids)
    unassigned, assigned = ids[:10], ids[10:]
    nodes: list[Node] = []

    def split(members: list[str], level: int, parent: str | None) -> None:
        node = Node(
            id=Node.make_id(level, members),
            parent_id=parent,
            level=level,
            name=f"n{len(nodes)}",
            size=len(members),
            member_ids=members,
        )
        nodes.append(node)
        if level == 0:
            return
        cuts = sorted(rng.sample(range(1, len(members)), k=min(len(members) - 1, rng.randint(1, 4))))
        for start, end in zip([0, *cuts], [*cuts, len(members)]):
            split(members[start:end], level - 1, node.id)

    cuts = sorted(rng.sample(range(1, len(assigned)), k=5))
    for start, end in zip([0, *cuts], [*cuts, len(assigned)]):
        split(assigned[start:end], 2, None)
    return Taxonomy(created_at=datetime(2024, 1, 1, tzinfo=UTC), nodes=nodes, unassigned_ids=unassigned), items


def support(node: Node, items: dict[str, Item], by_users: bool) -> int:
    return len({items[m].user_id for m in node.member_ids}) if by_users else len(node.member_ids)


def assert_invariants(
    before: Taxonomy, after: Taxonomy, items: dict[str, Item], threshold: int, by_users: bool
) -> None:
    assigned = sorted(m for root in before.roots() for m in root.member_ids)
    top = max(n.level for n in before.nodes)
    for level in range(top + 1):
        at_level = [m for n in after.nodes if n.level == level for m in n.member_ids]
        assert sorted(at_level) == assigned, f"level {level} does not add up"
    for node in after.nodes:
        children = after.children(node.id)
        assert node.size == len(node.member_ids)
        if node.level > 0:
            assert sorted(m for c in children for m in c.member_ids) == sorted(node.member_ids)
            assert all(c.level == node.level - 1 for c in children)
    original = before.by_id()
    hidden = hidden_example_ids(after)
    others = {n.id for n in after.nodes if n.name == OTHER_NAME}
    assert hidden == others
    for node in after.nodes:
        if node.id in original:
            assert support(node, items, by_users) >= threshold
            assert (node.name, node.parent_id, sorted(node.member_ids)) == (
                original[node.id].name,
                original[node.id].parent_id,
                sorted(original[node.id].member_ids),
            )
    small = {n.id for n in before.nodes if support(n, items, by_users) < threshold}
    assert not small & {n.id for n in after.nodes}
    assert len([n for n in after.roots() if n.name == OTHER_NAME]) <= 1
    assert after.unassigned_ids == before.unassigned_ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_users", [1, 3, 6, 12])
def test_folding_keeps_every_level_adding_up(seed, min_users):
    """Random trees at several thresholds: totals per level unchanged, only "Other" nodes hide examples."""
    taxonomy, items = random_taxonomy(seed)
    after = apply_privacy(taxonomy, items, PrivacySettings(enabled=True, min_users=min_users))
    assert_invariants(taxonomy, after, items, min_users, by_users=True)


def test_random_trees_do_fold_something():
    """The random trees above exercise folding at every level, not only the trivial case."""
    taxonomy, items = random_taxonomy(0)
    after = apply_privacy(taxonomy, items, PrivacySettings(enabled=True, min_users=6))
    kept = {n.id for n in after.nodes}
    folded_levels = {n.level for n in taxonomy.nodes if n.id not in kept}
    assert folded_levels == {0, 1, 2}
    assert any(n.name == OTHER_NAME and n.parent_id is None for n in after.nodes)


def test_item_counts_are_used_when_no_item_has_a_user():
    """Without user ids the threshold is `min_items` items."""
    taxonomy, items = random_taxonomy(3, with_users=False)
    settings = PrivacySettings(enabled=True, min_users=1000, min_items=9)
    after = apply_privacy(taxonomy, items, settings)
    assert_invariants(taxonomy, after, items, 9, by_users=False)
    assert after.summary["privacy"]["unit"] == "items" and after.summary["privacy"]["threshold"] == 9


def test_hand_built_example_folds_the_expected_nodes():
    """One-user nodes are folded: a leaf into its parent's Other, a whole top-level node into the top Other."""
    taxonomy, items = sample_taxonomy()
    after = apply_privacy(taxonomy, items, PrivacySettings(enabled=True, min_users=2))
    names = {n.name for n in after.nodes}
    assert {"Billing", "Refund requests", "Travel", "Flight changes"} <= names
    assert not {"Declined cards", "Luggage", "Lost luggage"} & names
    billing = next(n for n in after.nodes if n.name == "Billing")
    billing_other = next(c for c in after.children(billing.id) if c.name == OTHER_NAME)
    assert sorted(billing_other.member_ids) == ["i4", "i5"] and billing.size == 5
    top_other = next(n for n in after.roots() if n.name == OTHER_NAME)
    assert top_other.member_ids == ["i10"] and [c.member_ids for c in after.children(top_other.id)] == [["i10"]]
    assert unassigned_examples_hidden(after)
    assert after.summary["privacy"]["folded_node_count"] == 3


def test_disabled_and_auto_settings():
    """Disabled privacy changes nothing; "auto" must be resolved first and means on only for conversations."""
    taxonomy, items = sample_taxonomy()
    off = apply_privacy(taxonomy, items, PrivacySettings(enabled=False))
    assert off.nodes == taxonomy.nodes and hidden_example_ids(off) == set()
    with pytest.raises(ValueError, match="resolve"):
        apply_privacy(taxonomy, items, PrivacySettings())
    assert PrivacySettings().resolve(conversations=True).enabled is True
    assert PrivacySettings().resolve(conversations=False).enabled is False
    assert PrivacySettings(enabled=False).resolve(conversations=True).enabled is False
