"""What changed between two taxonomy versions: added, removed, grown, shrunk, renamed, moved, merged and split nodes.

Nodes are matched by ID (IDs are stable across refreshes and, by member overlap, across rebuilds). A node
that disappeared is *merged* when most of its members (more than `merge_share`) now sit in one node of the
same level, *split* when they are spread over several nodes that each hold at least `split_share` of
them, else *removed*. A surviving node is also listed as split when a new node took at least
`split_share` of its members.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

from clado.taxonomy.export_markdown import escape_markdown, one_line
from clado.taxonomy.records import Node, Taxonomy
from clado.taxonomy.staging import StagedFiles


class NodeRef(BaseModel):
    id: str
    level: int
    name: str
    size: int


class SizeChange(NodeRef):
    old_size: int
    delta: int


class Rename(BaseModel):
    id: str
    level: int
    old_name: str
    new_name: str


class Move(NodeRef):
    old_parent: NodeRef | None
    new_parent: NodeRef | None


class Share(BaseModel):
    id: str
    name: str
    share: float = Field(description="Share of the old node's members that sit in this node now")


class Merge(NodeRef):
    into: Share


class Split(NodeRef):
    into: list[Share]
    kept: bool = Field(description="Whether the old node still exists (a part was carved out of it)")


class TaxonomyDiff(BaseModel):
    """Changes from version `from_version` to `to_version`; sizes are item counts."""

    from_version: int
    to_version: int
    items: dict[str, int] = Field(description="Assigned items before and after: {'old': …, 'new': …}")
    unassigned: dict[str, int]
    added: list[NodeRef] = Field(default_factory=list)
    removed: list[NodeRef] = Field(default_factory=list)
    grown: list[SizeChange] = Field(default_factory=list)
    shrunk: list[SizeChange] = Field(default_factory=list)
    renamed: list[Rename] = Field(default_factory=list)
    moved: list[Move] = Field(default_factory=list)
    merged: list[Merge] = Field(default_factory=list)
    split: list[Split] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many nodes each kind of change touched."""
        kinds = ("added", "removed", "grown", "shrunk", "renamed", "moved", "merged", "split")
        return {kind: len(getattr(self, kind)) for kind in kinds}


def _ref(node: Node) -> NodeRef:
    return NodeRef(id=node.id, level=node.level, name=node.name, size=node.size)


def _assigned(taxonomy: Taxonomy) -> int:
    return len({m for n in taxonomy.leaves() for m in n.member_ids})


def _holders(taxonomy: Taxonomy) -> dict[int, dict[str, str]]:
    """Level → item id → the node of that level holding it."""
    out: dict[int, dict[str, str]] = {}
    for node in taxonomy.nodes:
        level = out.setdefault(node.level, {})
        for m in node.member_ids:
            level[m] = node.id
    return out


def diff_taxonomies(
    old: Taxonomy, new: Taxonomy, *, merge_share: float = 0.5, split_share: float = 0.2
) -> TaxonomyDiff:
    """Every change from `old` to `new`, each list ordered by level (top first), then size (largest first)."""
    old_index, new_index = old.by_id(), new.by_id()
    holders = _holders(new)
    diff = TaxonomyDiff(
        from_version=old.version,
        to_version=new.version,
        items={"old": _assigned(old), "new": _assigned(new)},
        unassigned={"old": len(old.unassigned_ids), "new": len(new.unassigned_ids)},
    )
    diff.added = [_ref(n) for n in new.nodes if n.id not in old_index]
    for node in old.nodes:
        members = node.member_ids
        where = Counter(h for m in members if (h := holders.get(node.level, {}).get(m)) is not None)
        shares = [Share(id=h, name=new_index[h].name, share=round(c / len(members), 4)) for h, c in where.most_common()]
        survivor = new_index.get(node.id)
        if survivor is None:
            if shares and shares[0].share > merge_share:
                diff.merged.append(Merge(**_ref(node).model_dump(), into=shares[0]))
            elif sum(s.share >= split_share for s in shares) >= 2:
                parts = [s for s in shares if s.share >= split_share]
                diff.split.append(Split(**_ref(node).model_dump(), into=parts, kept=False))
            else:
                diff.removed.append(_ref(node))
            continue
        carved = [s for s in shares if s.id not in old_index and s.share >= split_share]
        if carved:
            diff.split.append(Split(**_ref(node).model_dump(), into=carved, kept=True))
        if survivor.size != node.size:
            change = SizeChange(**_ref(survivor).model_dump(), old_size=node.size, delta=survivor.size - node.size)
            (diff.grown if change.delta > 0 else diff.shrunk).append(change)
        if survivor.name != node.name:
            diff.renamed.append(Rename(id=node.id, level=node.level, old_name=node.name, new_name=survivor.name))
        if survivor.parent_id != node.parent_id:
            diff.moved.append(
                Move(
                    **_ref(survivor).model_dump(),
                    old_parent=_ref(old_index[node.parent_id]) if node.parent_id else None,
                    new_parent=_ref(new_index[survivor.parent_id]) if survivor.parent_id else None,
                )
            )
    for kind in ("added", "removed", "grown", "shrunk", "merged", "split", "moved"):
        getattr(diff, kind).sort(key=lambda c: (-c.level, -c.size, c.name, c.id))
    diff.renamed.sort(key=lambda c: (-c.level, c.new_name, c.id))
    return diff


def _md(text: str) -> str:
    return escape_markdown(one_line(text, 200))


def diff_markdown(diff: TaxonomyDiff) -> str:
    """The diff as a Markdown report."""
    lines = [f"# Taxonomy changes: version {diff.from_version} → {diff.to_version}", ""]
    lines.append(
        f"Assigned items {diff.items['old']} → {diff.items['new']}; "
        f"unassigned {diff.unassigned['old']} → {diff.unassigned['new']}."
    )
    counts = diff.counts()
    lines += ["", " · ".join(f"{kind} {n}" for kind, n in counts.items()), ""]
    if not any(counts.values()):
        lines += ["No node changed.", ""]

    def section(title: str, rows: list[str]) -> None:
        if rows:
            lines.extend([f"## {title}", "", *rows, ""])

    section("Added", [f"- {_md(n.name)} (level {n.level}, {n.size} items) `{n.id}`" for n in diff.added])
    section("Grown", [f"- {_md(c.name)} (level {c.level}): {c.old_size} → {c.size} (+{c.delta})" for c in diff.grown])
    section("Shrunk", [f"- {_md(c.name)} (level {c.level}): {c.old_size} → {c.size} ({c.delta})" for c in diff.shrunk])
    section("Renamed", [f"- {_md(r.old_name)} → {_md(r.new_name)} (level {r.level}) `{r.id}`" for r in diff.renamed])
    section(
        "Moved",
        [
            f"- {_md(m.name)} (level {m.level}): {_md(m.old_parent.name) if m.old_parent else 'top'} → "
            f"{_md(m.new_parent.name) if m.new_parent else 'top'}"
            for m in diff.moved
        ],
    )
    section(
        "Merged",
        [
            f"- {_md(m.name)} ({m.size} items) → {_md(m.into.name)} ({m.into.share:.0%} of its items)"
            for m in diff.merged
        ],
    )
    section(
        "Split",
        [
            f"- {_md(s.name)} ({s.size} items{', kept' if s.kept else ''}) → "
            + ", ".join(f"{_md(p.name)} ({p.share:.0%})" for p in s.into)
            for s in diff.split
        ],
    )
    section("Removed", [f"- {_md(n.name)} (level {n.level}, {n.size} items) `{n.id}`" for n in diff.removed])
    return "\n".join(lines).rstrip() + "\n"


def write_diff(diff: TaxonomyDiff, staged: StagedFiles) -> dict[str, Path]:
    """Stage diff.json and diff.md (published with the exports); returns their final paths."""
    body = diff.model_dump(mode="json") | {"counts": diff.counts()}
    staged.path("diff.json").write_text(json.dumps(body, indent=1), encoding="utf-8")
    staged.path("diff.md").write_text(diff_markdown(diff), encoding="utf-8")
    return {"diff_json": staged.directory / "diff.json", "diff_md": staged.directory / "diff.md"}
