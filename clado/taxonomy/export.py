"""Write a build's outputs: taxonomy.json, taxonomy.html (with taxonomy_files/ for large taxonomies), report.md,
assignments.csv and map.png, all staged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clado.config import Config
from clado.taxonomy.export_csv import write_assignments_csv
from clado.taxonomy.export_html import write_html
from clado.taxonomy.export_json import write_json
from clado.taxonomy.export_markdown import write_markdown
from clado.taxonomy.map2d import map_png_base64, project_2d, render_map_png
from clado.taxonomy.records import Item, Taxonomy
from clado.taxonomy.staging import StagedFiles

SITE_FILES = "taxonomy_files"  # the folder beside taxonomy.html holding its per-topic example files


def top_group_names(taxonomy: Taxonomy, item_ids: list[str]) -> list[str | None]:
    """For each item, the name of its top-level node (None when unassigned)."""
    leaf_of = taxonomy.leaf_of()
    top = taxonomy.depth - 1
    return [taxonomy.ancestor_at(leaf_of[i], top).name if i in leaf_of else None for i in item_ids]


def map_sample(n: int, limit: int, *, seed: int) -> np.ndarray:
    """The rows the 2-D map shows: all of them up to `limit`, else a fixed random sample of `limit` in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def write_outputs(
    taxonomy: Taxonomy,
    items: dict[str, Item],
    X: np.ndarray,
    *,
    staged: StagedFiles,
    config: Config,
    conversations: bool,
    confidence: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Every export, staged (the caller publishes them after the store commit); returns their final paths.

    `confidence` (item id → probability of its leaf) fills assignments.csv's confidence column. The 2-D map
    coordinates are stored on the items for the HTML explorer."""
    written: dict[str, str] = {}
    item_ids = list(items)
    map_b64 = None
    if config.output.map and len(item_ids) >= 3:
        rows = map_sample(len(item_ids), config.output.map_max_items, seed=config.seed)
        xy = project_2d(X[rows], seed=config.seed)
        placed = [item_ids[r] for r in rows]
        for item_id, (x, y) in zip(placed, xy.tolist()):
            items[item_id].x, items[item_id].y = round(x, 4), round(y, 4)
        png = render_map_png(xy, top_group_names(taxonomy, placed), staged.path("map.png"), title=config.output.title)
        map_b64 = map_png_base64(png)
        written["map"] = "map.png"
    privacy = config.privacy.resolve(conversations=conversations)
    title = config.output.title
    write_json(taxonomy, items, staged.path("taxonomy.json"))
    site = len(item_ids) >= config.output.site_min_items
    write_html(
        taxonomy, items, staged.path("taxonomy.html"), title=title, map_png_b64=map_b64,
        examples_per_node=config.output.examples_per_node, privacy=privacy,
        chunks_in=staged.folder(SITE_FILES) if site else None,
    )  # fmt: skip
    if site:
        written["site"] = SITE_FILES
    else:
        staged.retire(SITE_FILES)
    write_markdown(taxonomy, items, staged.path("report.md"), privacy=privacy, title=title)
    write_assignments_csv(taxonomy, items, staged.path("assignments.csv"), confidence=confidence)
    written |= {"json": "taxonomy.json", "html": "taxonomy.html", "markdown": "report.md", "csv": "assignments.csv"}
    return {kind: staged.directory / name for kind, name in written.items()}
