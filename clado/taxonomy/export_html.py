"""taxonomy.html: one offline page (tree, search, node details, time chart, 2-D map), self-contained or, for large
taxonomies, with its examples in per-topic files beside it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from clado.taxonomy.counts import occurrences
from clado.taxonomy.export_markdown import children_index, pick_examples
from clado.taxonomy.privacy import PrivacySettings, hidden_example_ids, prepare_shared, unassigned_examples_hidden
from clado.taxonomy.records import Item, Taxonomy

MAX_TEXT_CHARS = 2000
MAX_FACET_CHARS = 200
MAX_TIME_BINS = 40
UNASSIGNED_SHOWN = 200
JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
PLACEHOLDER = re.compile(r"__CLADO_(CSP|TITLE|CSS|DATA|JS)__")


def embed_json(value: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>`, `&`, U+2028 and U+2029 become \\u escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: JSON_ESCAPES[m.group(0)], text)


def _day(stamp: datetime) -> date:
    return (stamp.astimezone(UTC) if stamp.tzinfo else stamp).date()


def _bin_start(day: date, unit: str) -> date:
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    return date(day.year, (day.month - 1) // months * months + 1, 1)


def _next_bin(start: date, unit: str) -> date:
    if unit in ("day", "week"):
        return start + timedelta(days=1 if unit == "day" else 7)
    years, month = divmod(start.month - 1 + {"month": 1, "quarter": 3, "year": 12}[unit], 12)
    return date(start.year + years, month + 1, 1)


def _bin_label(start: date, unit: str) -> str:
    labels = {
        "day": start.isoformat(),
        "week": f"week of {start.isoformat()}",
        "month": start.strftime("%Y-%m"),
        "quarter": f"{start.year}-Q{(start.month - 1) // 3 + 1}",
        "year": str(start.year),
    }
    return labels[unit]


def _bin_starts(first: date, last: date, unit: str, *, limit: int | None) -> list[date] | None:
    starts = [_bin_start(first, unit)]
    while (following := _next_bin(starts[-1], unit)) <= last:
        starts.append(following)
        if limit is not None and len(starts) > limit:
            return None
    return starts


def time_bins(days: list[date]) -> tuple[str, list[date]]:
    """The finest unit (day, week, month, quarter, else year) giving at most MAX_TIME_BINS bins, and the bin starts."""
    first, last = min(days), max(days)
    for unit in ("day", "week", "month", "quarter"):
        starts = _bin_starts(first, last, unit, limit=MAX_TIME_BINS)
        if starts is not None:
            return unit, starts
    return "year", _bin_starts(first, last, "year", limit=None) or []


def _pairs(facets: dict[str, Any]) -> list[list[str]]:
    pairs = []
    for key, value in facets.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        pairs.append([str(key), shown if len(shown) <= MAX_FACET_CHARS else shown[: MAX_FACET_CHARS - 1] + "…"])
    return pairs


def _map_points(items: dict[str, Item], leaf_index: dict[str, int]) -> dict[str, Any] | None:
    placed = [(item.id, item.x, item.y) for item in items.values() if item.x is not None and item.y is not None]
    if not placed:
        return None
    xs, ys = [x for _, x, _ in placed], [y for _, _, y in placed]
    left, bottom = min(xs), min(ys)
    width, height = max(xs) - left, max(ys) - bottom
    span = max(width, height) or 1.0
    return {
        "x": [round((x - left) / span, 4) for x in xs],
        "y": [round((y - bottom) / span, 4) for y in ys],
        "node": [leaf_index.get(item_id, -1) for item_id, _, _ in placed],
        "width": round(width / span, 4) or 1.0,
        "height": round(height / span, 4) or 1.0,
    }


def _checked_png(map_png_b64: str | None) -> str | None:
    if map_png_b64 is None:
        return None
    try:
        if not base64.b64decode(map_png_b64, validate=True).startswith(b"\x89PNG"):
            raise ValueError("map_png_b64 is not a PNG image")
    except binascii.Error as error:
        raise ValueError("map_png_b64 is not valid base64") from error
    return map_png_b64


def page_data(
    taxonomy: Taxonomy, items: dict[str, Item], *, title: str, map_png_b64: str | None, examples_per_node: int
) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready dict; nodes refer to each other and to examples by index."""
    tree = children_index(taxonomy)
    ordered = sorted(taxonomy.nodes, key=lambda n: (-n.level, -len(n.member_ids), n.name, n.id))
    position = {n.id: i for i, n in enumerate(ordered)}
    hidden = hidden_example_ids(taxonomy)
    picked = pick_examples(taxonomy, items, examples_per_node, hidden=hidden)
    unassigned_hidden = unassigned_examples_hidden(taxonomy)
    picked_unassigned = (
        [] if unassigned_hidden else [m for m in taxonomy.unassigned_ids if m in items][:UNASSIGNED_SHOWN]
    )
    example_ids = list(dict.fromkeys([m for n in ordered for m in picked[n.id]] + picked_unassigned))
    example_pos = {m: i for i, m in enumerate(example_ids)}

    days = {m: [_day(t) for t in item.times()] for m, item in items.items()}  # every occurrence's day
    all_days = [d for ds in days.values() for d in ds]
    unit, starts = time_bins(all_days) if all_days else ("", [])
    bin_number = {start: i for i, start in enumerate(starts)}

    def counts(member_ids: list[str]) -> list[int] | None:
        if not starts:
            return None
        bins = [0] * len(starts)
        for m in set(member_ids):
            for day in days.get(m, []):
                bins[bin_number[_bin_start(day, unit)]] += 1
        return bins

    leaf_index = {m: position[n.id] for n in ordered if not tree.get(n.id) for m in n.member_ids}
    trends = taxonomy.summary.get("trends")  # per-node sizes across versions, set by `clado refresh`
    assigned = {m for n in tree.get(None, []) for m in n.member_ids}
    return {
        "title": title,
        "version": taxonomy.version,
        "created_at": taxonomy.created_at.isoformat(),
        "fingerprint": _pairs(taxonomy.fingerprint),
        "privacy": taxonomy.summary.get("privacy"),
        "totals": {
            "items": occurrences([*assigned, *taxonomy.unassigned_ids], items),
            "records": len({items[m].record_id for m in assigned | set(taxonomy.unassigned_ids) if m in items}),
            "leaves": len(taxonomy.leaves()),
            "levels": taxonomy.depth,
            "unassigned": occurrences(taxonomy.unassigned_ids, items),
        },
        "roots": [position[n.id] for n in tree.get(None, [])],
        "nodes": [
            {
                "id": n.id,
                "parent": position.get(n.parent_id, -1) if n.parent_id else -1,
                "level": n.level,
                "name": n.name,
                "description": n.description,
                "keywords": n.keywords,
                "size": occurrences(n.member_ids, items),
                "children": [position[c.id] for c in tree.get(n.id, [])],
                "examples": [example_pos[m] for m in picked[n.id]],
                "hidden": n.id in hidden,
                "time": counts(n.member_ids),
                "trend": trends["sizes"].get(n.id) if trends else None,
            }
            for n in ordered
        ],
        "examples": [
            {
                "id": m,
                "record": items[m].record_id,
                "text": items[m].text[:MAX_TEXT_CHARS],
                "facets": _pairs(items[m].facets),
            }
            for m in example_ids
        ],
        "unassigned": {
            "size": occurrences(taxonomy.unassigned_ids, items),
            "examples": [example_pos[m] for m in picked_unassigned],
            "hidden": unassigned_hidden,
            "time": counts(taxonomy.unassigned_ids),
        },
        "time": {"unit": unit, "labels": [_bin_label(s, unit) for s in starts], "all": counts(list(assigned))}
        if starts
        else None,
        "versions": [f"v{v}" for v in trends["versions"]] if trends else None,
        "map": _map_points(items, leaf_index),
        "png": _checked_png(map_png_b64),
    }


def split_examples(data: dict[str, Any], folder: Path, *, base: Path) -> dict[str, Any]:
    """Move the examples of `data` into one script file per top-level topic in `folder` (and one for the unassigned
    items), each calling `cladoChunk(k, [[example index, example], …])`; nodes and the unassigned group name their
    chunk, and `data["site"]` says where the files are, relative to `base` (the page's folder)."""
    nodes, examples = data["nodes"], data["examples"]
    root: list[int] = []
    for i, node in enumerate(nodes):  # parents come before their children in `nodes`
        root.append(i if node["parent"] < 0 else root[node["parent"]])
    chunk_of_root = {r: k for k, r in enumerate(data["roots"])}
    unassigned = len(data["roots"])
    chunks: list[dict[int, Any]] = [{} for _ in range(unassigned + 1)]
    for i, node in enumerate(nodes):
        node["chunk"] = chunk_of_root[root[i]]
        chunks[node["chunk"]].update((k, examples[k]) for k in node["examples"])
    data["unassigned"]["chunk"] = unassigned
    chunks[unassigned].update((k, examples[k]) for k in data["unassigned"]["examples"])
    for k, chunk in enumerate(chunks):
        (folder / f"chunk-{k}.js").write_text(f"cladoChunk({k}, {embed_json(sorted(chunk.items()))});\n", "utf-8")
    site = {"folder": folder.relative_to(base).as_posix(), "examples": len(examples), "chunks": len(chunks)}
    return data | {"examples": None, "site": site}


def _asset(name: str) -> str:
    return resources.files("clado.taxonomy").joinpath("assets", name).read_text(encoding="utf-8")


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def write_html(
    taxonomy: Taxonomy,
    items: dict[str, Item],
    path: Path | str,
    *,
    title: str,
    map_png_b64: str | None = None,
    examples_per_node: int = 20,
    privacy: PrivacySettings | None = None,
    chunks_in: Path | None = None,
) -> Path:
    """Write the explorer, one HTML file that works offline with its data embedded once as escaped JSON.

    With `chunks_in` (a folder beside `path`), the examples go instead into one script file per top-level topic
    there, loaded when a topic is opened: for taxonomies too large to load at once."""
    path = Path(path)
    shown = prepare_shared(taxonomy, items, privacy)
    data = page_data(shown, items, title=title, map_png_b64=map_png_b64, examples_per_node=examples_per_node)
    if chunks_in is not None:
        data = split_examples(data, chunks_in, base=path.parent)
    css, script = _asset("taxonomy.css"), _asset("taxonomy.js")
    scripts = ("'self' " if chunks_in is not None else "") + _csp_hash(script)
    csp = (
        f"default-src 'none'; script-src {scripts}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    values = {"CSP": csp, "TITLE": html.escape(title), "CSS": css, "DATA": embed_json(data), "JS": script}
    page = PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("taxonomy.html"))
    path.write_text(page, encoding="utf-8")
    return path
