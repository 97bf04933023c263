"""Counting by occurrence: an item stands for its record and the record's exact duplicates, so every size,
share, time count and user count of a node adds up the input rows behind its members, not distinct texts."""

from __future__ import annotations

from clado.taxonomy.records import Item, Taxonomy


def occurrences(member_ids: list[str], items: dict[str, Item]) -> int:
    """Input rows behind the distinct `member_ids` (an id without an item counts once)."""
    return sum(items[m].count if m in items else 1 for m in set(member_ids))


def users(member_ids: list[str], items: dict[str, Item]) -> set[str]:
    """Distinct user ids over every occurrence of the members."""
    return {u for m in set(member_ids) if m in items for u in items[m].user_ids()}


def with_occurrence_sizes(taxonomy: Taxonomy, items: dict[str, Item]) -> Taxonomy:
    """`taxonomy` with every node's size the number of input rows behind its members."""
    nodes = [n.model_copy(update={"size": occurrences(n.member_ids, items)}) for n in taxonomy.nodes]
    return taxonomy.model_copy(update={"nodes": nodes})
