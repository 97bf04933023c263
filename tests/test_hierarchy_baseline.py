"""The scipy (Ward) hierarchy: recovers known nested groups and keeps the builder's output contract."""

import numpy as np
import pytest

from clado.agents.hierarchy import HierarchySettings, level_targets
from clado.pipeline.hierarchy_baseline import scipy_hierarchy
from clado.taxonomy.records import Node
from tests.test_hierarchy import assert_valid_tree


def nested_blobs(seed: int = 0) -> tuple[list[Node], np.ndarray, list[int], list[int]]:
    """20 leaves: 2 far-apart super groups, each of 2 groups of 5 leaves; returns leaves, centroids, group, super."""
    rng = np.random.default_rng(seed)
    centres = {(0, 0): (10, 3), (0, 1): (10, -3), (1, 0): (-10, 3), (1, 1): (-10, -3)}
    leaves, rows, group, sup = [], [], [], []
    for g, ((s, _sub), centre) in enumerate(centres.items()):
        for k in range(5):
            members = [f"g{g}-l{k}-m{m}" for m in range(k + 1)]
            leaves.append(Node(id=Node.make_id(0, members), level=0, name=f"Leaf {g}.{k}", size=len(members),
                               member_ids=members, keywords=[f"kw{g}"]))  # fmt: skip
            rows.append(np.array(centre, dtype=float) + rng.normal(scale=0.2, size=2))
            group.append(g)
            sup.append(s)
    order = rng.permutation(len(leaves))  # the input order must not matter
    return [leaves[i] for i in order], np.stack(rows)[order], [group[i] for i in order], [sup[i] for i in order]


def leaf_sets(nodes: list[Node], level: int) -> set[frozenset[str]]:
    return {frozenset(n.member_ids) for n in nodes if n.level == level}


def expected_sets(leaves: list[Node], labels: list[int]) -> set[frozenset[str]]:
    return {
        frozenset(m for leaf, lab in zip(leaves, labels) if lab == want for m in leaf.member_ids)
        for want in set(labels)
    }


def same_name(children: list[Node]) -> tuple[str, str]:
    return "Same name", "; ".join(c.name for c in children)


def test_recovers_known_nested_groups():
    leaves, centroids, group, sup = nested_blobs()
    settings = HierarchySettings(max_top=2, level_targets=[4, 2])
    nodes = scipy_hierarchy(leaves, centroids, settings=settings, name_fn=same_name)
    assert_valid_tree(nodes, leaves, max_top=2)
    assert leaf_sets(nodes, 1) == expected_sets(leaves, group)
    assert leaf_sets(nodes, 2) == expected_sets(leaves, sup)


def test_uses_the_builders_level_targets_and_unique_names():
    """Per-level counts equal `level_targets`; repeated names from `name_fn` are renamed from their keywords or numbered."""
    leaves, centroids, _, _ = nested_blobs()
    settings = HierarchySettings(max_top=3, branching=2)
    nodes = scipy_hierarchy(leaves, centroids, settings=settings, name_fn=same_name)
    targets = level_targets(len(leaves), settings)
    assert [sum(n.level == level for n in nodes) for level in range(1, len(targets) + 1)] == targets
    assert_valid_tree(nodes, leaves, max_top=3)
    top = [n for n in nodes if n.level == len(targets)]
    assert top[0].name == "Same name" and len({n.name for n in top}) == len(top)
    assert not any("(" in n.name for n in nodes)  # leaf names give few keywords here: the rest are numbered
    assert all(n.description for n in nodes if n.level > 0)
    again = scipy_hierarchy(leaves, centroids, settings=settings, name_fn=same_name)
    assert [n.id for n in again] == [n.id for n in nodes]


def test_merged_keywords_follow_child_sizes():
    leaves, centroids, _, _ = nested_blobs()
    nodes = scipy_hierarchy(
        leaves, centroids, settings=HierarchySettings(max_top=2, level_targets=[4, 2]), name_fn=same_name
    )
    for node in (n for n in nodes if n.level == 2):
        assert len(node.keywords) == 2 and all(k.startswith("kw") for k in node.keywords)


def test_small_inputs():
    leaves, centroids, _, _ = nested_blobs()
    for n in (1, 2):
        assert scipy_hierarchy(leaves[:n], centroids[:n], settings=HierarchySettings(), name_fn=same_name) == leaves[:n]
    three = scipy_hierarchy(leaves[:3], centroids[:3], settings=HierarchySettings(), name_fn=same_name)
    assert_valid_tree(three, leaves[:3], max_top=8)
    assert max(n.level for n in three) == 1
    with pytest.raises(ValueError, match="centroid rows"):
        scipy_hierarchy(leaves, centroids[:3], settings=HierarchySettings(), name_fn=same_name)
