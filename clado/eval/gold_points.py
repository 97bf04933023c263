"""Score a taxonomy against hand-labelled points: each record's gold list of (aspect, issue, sentiment).

A record's items are aligned to its gold points by shared words (an item of a review with one point is that point;
ties go to the point at the item's own position), so a review that raised two issues is scored on both. Used by
`benchmarks/bench_demo.py` with `examples/reviews.gold.jsonl`; gold labels are for evaluation only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from clado.eval.metrics import score_labels
from clado.taxonomy.records import Item, Taxonomy

WORD = re.compile(r"[a-z0-9]+")
BRACKET_SUFFIX = re.compile(r"^(.*\S)\s*\([^()]*\)$")


class GoldPoint(BaseModel):
    aspect: str
    issue: str
    sentiment: str

    @property
    def label(self) -> str:
        return f"{self.aspect} / {self.issue}"


def load_gold_points(path: Path) -> dict[str, list[GoldPoint]]:
    """record id → its gold points, from a JSONL file of {"id", "points": [{aspect, issue, sentiment}]}."""
    gold = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                gold[row["id"]] = [GoldPoint.model_validate(p) for p in row["points"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a gold row ({exc})") from exc
    return gold


def _stems(text: str) -> set[str]:
    return {w[:5] for w in WORD.findall(text.lower()) if len(w) > 2}


def aligned_point(item: Item, points: list[GoldPoint]) -> GoldPoint:
    """The gold point of `item`'s record that shares most words with the item's facets (or text)."""
    if len(points) == 1:
        return points[0]
    words = _stems(" ".join(str(v) for v in item.facets.values()) or item.text)
    position = int(item.id.rsplit("#", 1)[1]) if item.id.count("#") == 2 else 0
    overlap = [len(words & _stems(f"{p.aspect} {p.issue}")) for p in points]
    return points[max(range(len(points)), key=lambda i: (overlap[i], i == position, -i))]


def bracket_siblings(taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """Pairs of sibling names that differ only by a bracketed suffix ("Battery Issues" / "Battery Issues (brew)")."""
    pairs = []
    for parent in {n.parent_id for n in taxonomy.nodes}:
        names = [n.name for n in taxonomy.nodes if n.parent_id == parent]
        stems: dict[str, list[str]] = {}
        for name in names:
            match = BRACKET_SUFFIX.match(name)
            stems.setdefault((match[1] if match else name).casefold(), []).append(name)
        pairs += [(group[0], other) for group in stems.values() for other in group[1:]]
    return sorted(pairs)


def score_points(taxonomy: Taxonomy, items: dict[str, Item], gold: dict[str, list[GoldPoint]]) -> dict[str, Any]:
    """Leaf-level scores against the gold issues and aspects, the unassigned share, the largest top node's share,
    bracket-suffixed sibling names, and each leaf's majority gold label (for judging its name)."""
    scored = [i for i in items.values() if i.record_id in gold]
    if not scored:
        raise ValueError("no item belongs to a record of the gold file")
    point = {i.id: aligned_point(i, gold[i.record_id]) for i in scored}
    leaf_of = taxonomy.leaf_of()
    pred = [leaf_of.get(i.id, -1) for i in scored]
    issues = score_labels(pred, [point[i.id].label for i in scored])
    aspects = score_labels(pred, [point[i.id].aspect for i in scored])
    records = {i.record_id for i in scored}
    total = len(items)
    top = max((len(set(n.member_ids)) for n in taxonomy.roots()), default=0)
    leaves = []
    for leaf in sorted(taxonomy.leaves(), key=lambda n: (-len(n.member_ids), n.name)):
        labels = Counter(point[m].label for m in leaf.member_ids if m in point)
        if labels:
            majority, count = labels.most_common(1)[0]
            leaves.append({"name": leaf.name, "size": sum(labels.values()), "majority": majority,
                           "majority_share": round(count / sum(labels.values()), 3)})  # fmt: skip
    return {
        "items": len(scored),
        "records": len(records),
        "gold_points": sum(len(gold[r]) for r in records),
        "leaf_purity_issue": round(issues["purity"], 4),
        "nmi_issue": round(issues["nmi"], 4),
        "leaf_purity_aspect": round(aspects["purity"], 4),
        "nmi_aspect": round(aspects["nmi"], 4),
        "leaves": issues["n_clusters"],
        "unassigned_share": round(len(taxonomy.unassigned_ids) / total, 4) if total else 0.0,
        "largest_top_share": round(top / total, 4) if total else 0.0,
        "top_nodes": len(taxonomy.roots()),
        "bracket_siblings": bracket_siblings(taxonomy),
        "leaf_majorities": leaves,
    }
