"""A hierarchy without an LLM: Ward linkage on the leaves' centroids, cut to the LLM builder's per-level counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.cluster.hierarchy import cut_tree, linkage

from clado.agents.hierarchy import HierarchySettings, level_targets, make_parent
from clado.agents.labels import ClusterName, distinctive_words, make_unique
from clado.taxonomy.records import Node


def scipy_hierarchy(
    leaves: list[Node],
    centroids: np.ndarray,
    *,
    settings: HierarchySettings,
    name_fn: Callable[[list[Node]], tuple[str, str]],
) -> list[Node]:
    """Every node of the tree (leaves with `parent_id` set, then parents of levels 1..L), like `build_hierarchy`.

    Row i of `centroids` belongs to `leaves[i]`. The level counts come from `level_targets` (as in the LLM
    builder); cuts of one Ward linkage are nested, so every node of a level lies inside one node of the next.
    Parents are named by `name_fn(children) -> (name, description)`; repeated names among a level's parents
    get a distinguishing word from their children's names.
    """
    if len(leaves) != len(centroids):
        raise ValueError(f"{len(leaves)} leaves but {len(centroids)} centroid rows")
    targets = level_targets(len(leaves), settings)
    if not targets:
        return list(leaves)
    tree = linkage(np.asarray(centroids, dtype=np.float64), method="ward")
    done: list[Node] = []
    current = list(leaves)
    cuts = cut_tree(tree, n_clusters=targets)
    first_leaf = list(range(len(leaves)))  # a leaf row inside each current node
    for level in range(1, len(targets) + 1):
        cut = cuts[:, level - 1]
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(first_leaf):
            groups.setdefault(int(cut[row]), []).append(i)
        members = sorted(groups.values(), key=lambda g: (-sum(current[i].size for i in g), g[0]))
        names = [ClusterName(**dict(zip(("name", "description"), name_fn([current[i] for i in g])))) for g in members]
        hints = distinctive_words([[current[i].name for i in g] for g in members])
        unique, _ = make_unique([n.name for n in names], hints=hints)
        parents = [
            make_parent(level, [current[i] for i in g], ClusterName(name=u, description=n.description))
            for g, n, u in zip(members, names, unique)
        ]
        parent_of = {i: p.id for g, p in zip(members, parents) for i in g}
        done += [node.model_copy(update={"parent_id": parent_of[i]}) for i, node in enumerate(current)]
        first_leaf = [first_leaf[g[0]] for g in members]
        current = parents
    return done + current
