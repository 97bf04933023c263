"""report.md: the hierarchy as nested lists with counts, shares and a few example quotes per leaf."""

from __future__ import annotations

import re
from itertools import zip_longest
from pathlib import Path

from clado.taxonomy.counts import occurrences
from clado.taxonomy.privacy import PrivacySettings, hidden_example_ids, prepare_shared
from clado.taxonomy.records import Item, Node, Taxonomy

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~#!])")


def one_line(text: str, limit: int) -> str:
    """Collapse all whitespace (including U+2028/U+2029) to single spaces and cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def escape_markdown(text: str) -> str:
    """Backslash-escape the characters that could start Markdown or HTML markup."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def pick_examples(
    taxonomy: Taxonomy, items: dict[str, Item], per_node: int, *, hidden: set[str] | None = None
) -> dict[str, list[str]]:
    """Up to `per_node` example item ids per node: a leaf's medoid first, then its members in order;
    a parent takes its children's examples in turn, so every child is represented. `hidden` nodes get
    none, so their items never show up under a parent either."""
    picked: dict[str, list[str]] = {}
    children = children_index(taxonomy)
    for node in sorted(taxonomy.nodes, key=lambda n: n.level):
        if node.id in (hidden or set()):
            candidates = []
        elif not children.get(node.id):
            members = set(node.member_ids)
            ordered = ([node.medoid_id] if node.medoid_id in members else []) + node.member_ids
            candidates = [m for m in dict.fromkeys(ordered) if m in items]
        else:
            by_child = [picked.get(c.id, []) for c in children[node.id]]
            candidates = [m for group in zip_longest(*by_child) for m in group if m is not None]
        picked[node.id] = candidates[:per_node]
    return picked


def children_index(taxonomy: Taxonomy) -> dict[str | None, list[Node]]:
    """Parent id (None for the roots) → children, largest first, ties by name, the same in every export."""
    index: dict[str | None, list[Node]] = {}
    for node in sorted(taxonomy.nodes, key=lambda n: (-len(n.member_ids), n.name, n.id)):
        index.setdefault(node.parent_id, []).append(node)
    return index


def write_markdown(
    taxonomy: Taxonomy,
    items: dict[str, Item],
    path: Path | str,
    *,
    privacy: PrivacySettings | None = None,
    title: str = "Taxonomy",
    quotes_per_leaf: int = 3,
) -> Path:
    """Write the report; nodes hidden by `privacy` show their counts but no quotes."""
    shown = prepare_shared(taxonomy, items, privacy)
    hidden = hidden_example_ids(shown)
    examples = pick_examples(shown, items, quotes_per_leaf, hidden=hidden)
    assigned = {m for root in shown.roots() for m in root.member_ids}
    total = occurrences([*assigned, *shown.unassigned_ids], items)

    def share(count: int) -> str:
        counted = f"{count} item" if count == 1 else f"{count} items"
        return f"{counted} ({100 * count / total:.1f}%)" if total else counted

    lines = [f"# {escape_markdown(one_line(title, 200))}", ""]
    records = len({items[m].record_id for m in assigned | set(shown.unassigned_ids) if m in items})
    lines += [f"{total} items from {records} records · {len(shown.leaves())} leaves in {shown.depth} levels", ""]

    def emit(node: Node, indent: int) -> None:
        pad = "  " * indent
        described = f": {escape_markdown(one_line(node.description, 300))}" if node.description else ""
        lines.append(
            f"{pad}- **{escape_markdown(one_line(node.name, 200))}** — {share(occurrences(node.member_ids, items))}{described}"
        )
        children = tree.get(node.id, [])
        for child in children:
            emit(child, indent + 1)
        if not children:
            if node.id in hidden:
                lines.append(f"{pad}  - _examples hidden (below the privacy threshold)_")
            for item_id in examples[node.id]:
                lines.append(f"{pad}  - “{escape_markdown(one_line(items[item_id].text, 200))}”")

    tree = children_index(shown)
    for root in tree.get(None, []):
        emit(root, 0)
    lines += ["", f"**Unassigned:** {share(occurrences(shown.unassigned_ids, items))}", ""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
