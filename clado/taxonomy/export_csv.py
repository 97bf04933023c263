"""assignments.csv: one row per item with the input rows it stands for and its node at every level, leaf first;
cells safe for spreadsheets."""

from __future__ import annotations

import csv
from pathlib import Path

from clado.taxonomy.records import Item, Taxonomy

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """`cell`, with a leading single quote when a spreadsheet would read it as a formula (OWASP rule)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def assignment_header(depth: int) -> list[str]:
    """Column names: item_id, record_id, rows (the input rows behind the item), level0_id, level0_name, …,
    confidence."""
    levels = [f"level{lvl}_{part}" for lvl in range(depth) for part in ("id", "name")]
    return ["item_id", "record_id", "rows", *levels, "confidence"]


def write_assignments_csv(
    taxonomy: Taxonomy, items: dict[str, Item], path: Path | str, *, confidence: dict[str, float] | None = None
) -> Path:
    """Write one row per item; unassigned items (and levels a branch lacks) have empty node columns."""
    index = taxonomy.by_id()
    leaf_of = taxonomy.leaf_of()
    depth = taxonomy.depth
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(assignment_header(depth))
        for item_id, item in items.items():
            columns = [""] * (2 * depth)
            node = index.get(leaf_of.get(item_id, ""))
            while node is not None:
                columns[2 * node.level : 2 * node.level + 2] = [node.id, node.name]
                node = index.get(node.parent_id) if node.parent_id else None
            score = (confidence or {}).get(item_id)
            row = [item_id, item.record_id, str(item.count), *columns, "" if score is None else f"{score:.4f}"]
            writer.writerow([spreadsheet_safe(cell) for cell in row])
    return path
