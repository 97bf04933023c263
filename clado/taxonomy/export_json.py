"""taxonomy.json: the taxonomy as stored plus the text, record and facets of every item."""

from __future__ import annotations

import json
from pathlib import Path

from clado.taxonomy.records import Item, Taxonomy


def write_json(taxonomy: Taxonomy, items: dict[str, Item], path: Path | str) -> Path:
    """Write `taxonomy.model_dump(mode="json")` with an added `items` map (id → text, record_id, facets and
    count, the input rows the item stands for)."""
    body = taxonomy.model_dump(mode="json")
    body["items"] = {
        item_id: item.model_dump(mode="json", include={"text", "record_id", "facets"}) | {"count": item.count}
        for item_id, item in items.items()
    }
    path = Path(path)
    path.write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
