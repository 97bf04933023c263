"""Privacy thresholds for shared exports: nodes backed by too few users are folded and show no examples."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clado.taxonomy.counts import occurrences, users
from clado.taxonomy.records import NODE_NAMESPACE, Item, Node, Taxonomy

OTHER_NAME = "Other (below privacy threshold)"
OTHER_DESCRIPTION = "Items from topics too small to show on their own; counted here so totals add up."


class PrivacySettings(BaseModel):
    """When to fold small nodes. `enabled="auto"` means on for conversations, off for other records."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | Literal["auto"] = "auto"
    min_users: int = Field(default=5, ge=1, description="Distinct user ids a node needs to be shown")
    min_items: int = Field(default=10, ge=1, description="Input rows a node needs when no item carries a user id")

    def resolve(self, *, conversations: bool) -> PrivacySettings:
        """A copy with `enabled` decided: "auto" becomes True exactly when the records are conversations."""
        if self.enabled != "auto":
            return self
        return self.model_copy(update={"enabled": conversations})


def _support(member_ids: list[str], items: dict[str, Item], *, by_users: bool) -> int:
    """Distinct users over every occurrence of the members, or their input rows when there are no users."""
    return len(users(member_ids, items)) if by_users else occurrences(member_ids, items)


def _other_chain(parent_id: str | None, top_level: int, member_ids: list[str], size: int) -> list[Node]:
    """ "Other" nodes from `top_level` down to level 0, one per level, each holding `member_ids`."""
    chain: list[Node] = []
    for level in range(top_level, -1, -1):
        node_id = str(uuid.uuid5(NODE_NAMESPACE, f"privacy-other:{parent_id}:{level}"))
        chain.append(
            Node(
                id=node_id,
                parent_id=parent_id,
                level=level,
                name=OTHER_NAME,
                description=OTHER_DESCRIPTION,
                size=size,
                member_ids=list(member_ids),
            )
        )
        parent_id = node_id
    return chain


def apply_privacy(taxonomy: Taxonomy, items: dict[str, Item], settings: PrivacySettings) -> Taxonomy:
    """A copy of `taxonomy` for shared exports, with every node below the threshold folded into its parent.

    Support only shrinks going down the tree, so the shown nodes form an upper subtree. Under each shown
    node, the members of its folded children go to one "Other" chain reaching level 0 (top-level folds go
    to a single top-level "Other"), so every level still adds up to the same total. "Other" nodes and a
    small unassigned group hide their examples; `summary["privacy"]` records which.
    """
    if settings.enabled == "auto":
        raise ValueError("PrivacySettings.enabled is 'auto': call settings.resolve(conversations=...) first")
    if not settings.enabled:
        return taxonomy.model_copy(deep=True, update={"summary": {**taxonomy.summary, "privacy": {"enabled": False}}})
    by_users = any(item.user_ids() for item in items.values())
    threshold = settings.min_users if by_users else settings.min_items
    index = taxonomy.by_id()
    shown = {n.id for n in taxonomy.nodes if _support(n.member_ids, items, by_users=by_users) >= threshold}

    def visible(node: Node) -> bool:
        return node.id in shown and (node.parent_id is None or visible(index[node.parent_id]))

    nodes = [
        n.model_copy(deep=True, update={"size": occurrences(n.member_ids, items)}) for n in taxonomy.nodes if visible(n)
    ]
    kept = {n.id for n in nodes}
    hidden: list[str] = []

    def add_other(parent_id: str | None, covering: list[Node], member_ids: list[str], level: int) -> None:
        covered = {m for child in covering for m in child.member_ids}
        residual = sorted(set(member_ids) - covered)
        if residual:
            chain = _other_chain(parent_id, level, residual, occurrences(residual, items))
            nodes.extend(chain)
            hidden.extend(n.id for n in chain)

    kept_children: dict[str, list[Node]] = {}
    for node in nodes:
        if node.parent_id is not None:
            kept_children.setdefault(node.parent_id, []).append(node)
    for node in list(nodes):
        if node.level > 0:
            add_other(node.id, kept_children.get(node.id, []), node.member_ids, node.level - 1)
    all_assigned = [m for root in taxonomy.roots() for m in root.member_ids]
    add_other(
        None, [n for n in nodes if n.parent_id is None], all_assigned, max((n.level for n in taxonomy.nodes), default=0)
    )
    unassigned_hidden = _support(taxonomy.unassigned_ids, items, by_users=by_users) < threshold
    summary = {
        **taxonomy.summary,
        "privacy": {
            "enabled": True,
            "unit": "users" if by_users else "items",
            "threshold": threshold,
            "folded_node_count": len(taxonomy.nodes) - len(kept),
            "hidden_example_node_ids": hidden,
            "unassigned_examples_hidden": unassigned_hidden,
        },
    }
    return taxonomy.model_copy(deep=True, update={"nodes": nodes, "summary": summary})


def hidden_example_ids(taxonomy: Taxonomy) -> set[str]:
    """Node ids whose examples must not be shown (set by `apply_privacy`)."""
    return set(taxonomy.summary.get("privacy", {}).get("hidden_example_node_ids", []))


def unassigned_examples_hidden(taxonomy: Taxonomy) -> bool:
    """Whether the unassigned items may be listed (False unless `apply_privacy` hid them)."""
    return bool(taxonomy.summary.get("privacy", {}).get("unassigned_examples_hidden", False))


def prepare_shared(taxonomy: Taxonomy, items: dict[str, Item], privacy: PrivacySettings | None) -> Taxonomy:
    """The taxonomy a shared export shows: privacy applied when settings are given and enabled."""
    return taxonomy if privacy is None else apply_privacy(taxonomy, items, privacy)
