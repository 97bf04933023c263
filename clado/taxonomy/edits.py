"""Analyst edits of a taxonomy (rename, merge, move, lock), recorded in the store and replayed after refreshes.

An edit is an operation plus arguments that snapshot what it needs to be replayed on a later version:
a merge keeps the merged node's level and members, a lock its name, description, level and members. IDs
are stable across refreshes and rebuilds, so most edits replay by ID; a merged node that a rebuild brought
back is found again by member overlap, and a locked node that a rebuild dissolved is restored from its members.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from clado.taxonomy.records import Node, Taxonomy

EDIT_OPS = ("rename", "merge", "move", "lock")
MIN_PREFIX = 6


class EditError(ValueError):
    """An edit that cannot be applied (unknown node, wrong levels, locked node)."""


def recompute_members(nodes: list[Node]) -> list[Node]:
    """Parents' members and sizes from their children, bottom up; empty leaves and childless parents are dropped."""
    kept: dict[str, Node] = {}
    children: dict[str, list[Node]] = {}
    for level in sorted({n.level for n in nodes}):
        for node in (n for n in nodes if n.level == level):
            if level == 0:
                members = list(dict.fromkeys(node.member_ids))
            else:
                members = sorted({m for child in children.get(node.id, []) for m in child.member_ids})
            if not members:
                continue
            updated = node.model_copy(update={"member_ids": members, "size": len(members)})
            kept[node.id] = updated
            if node.parent_id is not None:
                children.setdefault(node.parent_id, []).append(updated)
    return [kept[n.id] for n in nodes if n.id in kept]


def resolve_node(taxonomy: Taxonomy, ref: str) -> Node:
    """The node whose ID is `ref`, or starts with `ref` (at least MIN_PREFIX characters, unique)."""
    index = taxonomy.by_id()
    if ref in index:
        return index[ref]
    matches = [n for n in taxonomy.nodes if len(ref) >= MIN_PREFIX and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise EditError(f"node id prefix {ref!r} is ambiguous ({len(matches)} nodes); give more characters")
    raise EditError(f"no node {ref!r} in taxonomy version {taxonomy.version}")


def make_edit(taxonomy: Taxonomy, op: str, params: list[str], *, description: str | None = None) -> dict[str, Any]:
    """The arguments recorded for `op` with command-line `params`, validated against `taxonomy`."""
    expected = {"rename": 2, "merge": 2, "move": 2, "lock": 1}
    if op not in expected:
        raise EditError(f"unknown edit {op!r}; use one of {', '.join(EDIT_OPS)}")
    if len(params) != expected[op]:
        usage = {
            "rename": "rename NODE 'New name'", "merge": "merge INTO NODE", "move": "move NODE NEW_PARENT", "lock": "lock NODE"
        }  # fmt: skip
        raise EditError(f"usage: clado edit --store DIR {usage[op]}")
    node = resolve_node(taxonomy, params[0])
    if op == "rename":
        name = " ".join(params[1].split())
        if not name:
            raise EditError("the new name is empty")
        return {"node": node.id, "name": name, "description": description}
    if op == "merge":
        other = resolve_node(taxonomy, params[1])
        return {"into": node.id, "node": other.id, "level": other.level, "members": other.member_ids}
    if op == "move":
        return {"node": node.id, "parent": resolve_node(taxonomy, params[1]).id}
    return {
        "node": node.id,
        "name": node.name,
        "description": node.description,
        "level": node.level,
        "members": node.member_ids,
    }


def locked_ids(edits: list[dict[str, Any]]) -> set[str]:
    """IDs of the nodes locked by `edits`."""
    return {e["args"]["node"] for e in edits if e["op"] == "lock"}


def apply_edit(taxonomy: Taxonomy, op: str, args: dict[str, Any], *, locked: set[str]) -> Taxonomy:
    """`taxonomy` with one edit applied by ID; raises EditError when it does not apply."""
    index = taxonomy.by_id()

    def node(key: str) -> Node:
        if args[key] not in index:
            raise EditError(f"node {args[key]} is not in taxonomy version {taxonomy.version}")
        return index[args[key]]

    if op in ("rename", "lock"):
        target = node("node")
        update = {"name": args["name"]}
        if args.get("description") is not None:
            update["description"] = args["description"]
        return _replace(taxonomy, [target.model_copy(update=update)])
    if op == "move":
        child, parent = node("node"), node("parent")
        if parent.level != child.level + 1:
            raise EditError(f"{parent.name!r} (level {parent.level}) cannot hold {child.name!r} (level {child.level})")
        return _replace(taxonomy, [child.model_copy(update={"parent_id": parent.id})])
    if op == "merge":
        return _merge(taxonomy, node("into"), node("node"), locked=locked)
    raise EditError(f"unknown edit {op!r}")


def _merge(taxonomy: Taxonomy, into: Node, other: Node, *, locked: set[str]) -> Taxonomy:
    if into.id == other.id:
        raise EditError("cannot merge a node into itself")
    if into.level != other.level:
        raise EditError(f"cannot merge level {other.level} into level {into.level}: merge nodes of one level")
    if other.id in locked:
        raise EditError(f"{other.name!r} is locked and cannot be merged away")
    nodes = []
    for n in taxonomy.nodes:
        if n.id == other.id:
            continue
        if n.id == into.id and n.level == 0:
            n = n.model_copy(update={"member_ids": n.member_ids + other.member_ids})
        elif n.parent_id == other.id:
            n = n.model_copy(update={"parent_id": into.id})
        nodes.append(n)
    return _with_nodes(taxonomy, nodes)


def _replace(taxonomy: Taxonomy, changed: list[Node]) -> Taxonomy:
    by_id = {n.id: n for n in changed}
    return _with_nodes(taxonomy, [by_id.get(n.id, n) for n in taxonomy.nodes])


def _with_nodes(taxonomy: Taxonomy, nodes: list[Node]) -> Taxonomy:
    """`taxonomy` with `nodes` (every edit keeps each item in exactly one leaf; parents are recomputed)."""
    return taxonomy.model_copy(update={"nodes": recompute_members(nodes)})


def restore_node(taxonomy: Taxonomy, args: dict[str, Any]) -> Taxonomy:
    """Bring back a locked node that a rebuild dissolved: a leaf from its former items, a parent from the
    nodes one level down whose members mostly were its members. Raises EditError when nothing is left of it."""
    level, members = args["level"], set(args["members"])
    if level == 0:
        holders = {m: n for n in taxonomy.leaves() for m in n.member_ids}
        taken = [m for m in args["members"] if m in holders]
        if not taken:
            raise EditError(f"no item of locked node {args['name']!r} is assigned any more")
        home = Counter(holders[m].parent_id for m in taken).most_common(1)[0][0]
        nodes = [n.model_copy(update={"member_ids": [m for m in n.member_ids if m not in members]}) if n.level == 0 else n
                 for n in taxonomy.nodes]  # fmt: skip
        restored = Node(id=args["node"], parent_id=home, level=0, name=args["name"], description=args["description"],
                        member_ids=taken, size=len(taken))  # fmt: skip
        return _with_nodes(taxonomy, nodes + [restored])
    adopted = [
        n
        for n in taxonomy.nodes
        if n.level == level - 1 and 2 * sum(m in members for m in n.member_ids) > len(n.member_ids)
    ]
    if not adopted:
        raise EditError(f"no node below locked node {args['name']!r} is left")
    index = taxonomy.by_id()
    former = Counter(n.parent_id for n in adopted).most_common(1)[0][0]
    home = index[former].parent_id if former is not None else None
    moved = {n.id for n in adopted}
    nodes = [n.model_copy(update={"parent_id": args["node"]}) if n.id in moved else n for n in taxonomy.nodes]
    restored = Node(id=args["node"], parent_id=home, level=level, name=args["name"], description=args["description"])
    return _with_nodes(taxonomy, nodes + [restored])


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def replay_edits(
    taxonomy: Taxonomy, edits: list[dict[str, Any]], *, min_jaccard: float
) -> tuple[Taxonomy, dict[str, Any]]:
    """Re-apply every recorded edit in order; edits that no longer apply are skipped and reported.

    A merge whose merged node is gone is applied to the node of that level whose members overlap the
    recorded ones by at least `min_jaccard` (when a rebuild brought it back), else it is already in effect.
    """
    locked: set[str] = set()
    skipped: list[dict[str, Any]] = []
    restored: list[str] = []
    for edit in edits:
        op, args = edit["op"], edit["args"]
        try:
            if op == "lock" and args["node"] not in taxonomy.by_id():
                taxonomy = restore_node(taxonomy, args)
                restored.append(args["node"])
            if op == "merge" and args["node"] not in taxonomy.by_id():
                recorded = set(args["members"])
                candidates = [
                    (j, n.id) for n in taxonomy.nodes
                    if n.level == args["level"] and n.id != args["into"] and n.id not in locked
                    and (j := _jaccard(recorded, set(n.member_ids))) >= min_jaccard
                ]  # fmt: skip
                if not candidates:
                    continue
                args = args | {"node": max(candidates)[1]}
            taxonomy = apply_edit(taxonomy, op, args, locked=locked)
            if op == "lock":
                locked.add(args["node"])
        except EditError as exc:
            skipped.append({"seq": edit["seq"], "op": op, "reason": str(exc)})
    report = {"applied": len(edits) - len(skipped), "skipped": skipped, "locked": sorted(locked), "restored": restored}
    return taxonomy, report
