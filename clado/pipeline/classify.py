"""Texts → leaves of a stored taxonomy: what `/v1/classify`, `clado classify` and `clado.classify` answer.

Each text is embedded in process with the taxonomy's own embedder (IDF pooling with its stored statistics) and
routed by `clado.pipeline.route.route` against the leaf centroids of the stored item vectors, with the taxonomy's
calibration: the most probable leaf's path from the top, its probability and cosine, `is_new` when no leaf is
probable enough (a new problem), and the next most probable leaves.

Limitation: no LLM runs at classify time, so queries are not turned into facets. Leaves are centroids of the
clustered facet texts (e.g. "Aspect: …\\nIssue: …" for reviews), so a query is worded like the main facet line
("Issue: {text}") before embedding (`query_template = "auto"`); raw texts sit further from facet centroids than
the items themselves.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from clado.backends.embed import Embedder, EmbedSettings, format_query, make_embedder
from clado.backends.idf_pooling import stored_item_embedder
from clado.config import Config
from clado.pipeline.refresh import stored_config, taxonomy_items
from clado.pipeline.route import RoutingSettings, fit_calibration, member_centroids, route
from clado.taxonomy.records import Calibration, Node, Record, Taxonomy
from clado.taxonomy.staging import staged_files
from clado.taxonomy.store import Store

FACET_LINE = re.compile(r"^([A-Z][A-Za-z ]{0,30}): (.*)$")
TEMPLATE_SAMPLE = 500


class RoutingError(ValueError):
    """Routing cannot start: no store, an empty store, another embedder."""


class Step(BaseModel):
    id: str
    name: str
    level: int


class Alternative(BaseModel):
    id: str
    name: str
    probability: float


class Classification(BaseModel):
    path: list[Step] = Field(description="From the top-level node down to the most probable leaf")
    probability: float = Field(description="Calibrated probability that the text belongs to that leaf")
    cosine: float = Field(description="Cosine of the text to the leaf's centroid")
    is_new: bool = Field(
        description="True when no leaf is probable enough (below the calibrated threshold): a new problem"
    )
    alternatives: list[Alternative] = Field(description="The next most probable leaves, most probable first")


def query_template_for(texts: list[str]) -> str:
    """'Label: {text}' for the facet line with the most text when every sampled text is 'Label: value' lines, else '{text}'."""
    chars: dict[str, int] = defaultdict(int)
    for text in texts[:TEMPLATE_SAMPLE]:
        matches = [FACET_LINE.match(line) for line in text.splitlines()]
        if not matches or not all(matches):
            return "{text}"
        for match in matches:
            chars[match.group(1)] += len(match.group(2))  # type: ignore[union-attr]
    if not chars:
        return "{text}"
    label = max(sorted(chars), key=lambda k: chars[k])
    return f"{label}: {{text}}"


class RoutingIndex:
    """One taxonomy version ready to route: unit leaf centroids, the calibration and each leaf's path from the top."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        centroids: np.ndarray,
        *,
        embedder: Embedder,
        calibration: Calibration,
        template: str,
        min_cosine: float | None = None,
        alternatives: int = 3,
    ):
        self.taxonomy = taxonomy
        self.version = taxonomy.version
        self.leaves = taxonomy.leaves()
        self.leaf_ids = [leaf.id for leaf in self.leaves]
        self.centroids = centroids
        self.embedder = embedder
        self.calibration = calibration
        self.threshold = calibration.threshold
        self.template = template
        self.min_cosine = min_cosine
        self.alternatives = alternatives
        index = taxonomy.by_id()
        self.paths = [self._path(leaf, index) for leaf in self.leaves]
        self._embed_lock = threading.Lock()

    @staticmethod
    def _path(leaf: Node, index: dict[str, Node]) -> list[Step]:
        steps = [leaf]
        while steps[-1].parent_id is not None:
            steps.append(index[steps[-1].parent_id])
        return [Step(id=n.id, name=n.name, level=n.level) for n in reversed(steps)]

    @classmethod
    def from_store(
        cls,
        store: Store,
        *,
        embedder: Embedder,
        query_template: str,
        embed: EmbedSettings | None = None,
        routing: RoutingSettings | None = None,
        min_cosine: float | None = None,
    ) -> RoutingIndex:
        """The latest version in `store`, with centroids from the stored (cached) embeddings of its items.

        With `embed` (the config's embedding settings), texts are embedded as the taxonomy's items were (IDF
        pooling). A taxonomy stored before calibrations existed is calibrated here with `routing`."""
        routing = routing or RoutingSettings()
        taxonomy = store.taxonomy()
        if taxonomy is None:
            raise RoutingError(f"{store.path} holds no taxonomy: run `clado build` first")
        if embed is not None:
            embedder = stored_item_embedder(embedder, embed, store, taxonomy.fingerprint)
        if taxonomy.fingerprint.get("embed_model") != embedder.model_id:
            raise RoutingError(
                f"the taxonomy was embedded with {taxonomy.fingerprint.get('embed_model')!r} but the config gives "
                f"{embedder.model_id!r}"
            )
        items = taxonomy_items(store, taxonomy, embedder=embedder, records={r.id: r for r in store.records()})
        leaves = taxonomy.leaves()
        centroids = member_centroids(leaves, items.rows(), items.vectors)
        calibration = taxonomy.calibration or fit_calibration(leaves, items.rows(), items.vectors, settings=routing)
        members = {m for leaf in leaves for m in leaf.member_ids}
        template = query_template
        if template == "auto":
            template = query_template_for([v.text for v in items.values if v.item_id in members])
        return cls(
            taxonomy, centroids, embedder=embedder, calibration=calibration, template=template, min_cosine=min_cosine,
            alternatives=routing.alternatives,
        )  # fmt: skip

    def classify(self, texts: list[str]) -> list[Classification]:
        """Each text's most probable leaf with its path, probability, cosine, is_new flag and alternatives."""
        if not self.leaves:
            return [Classification(path=[], probability=0.0, cosine=0.0, is_new=True, alternatives=[]) for _ in texts]
        with self._embed_lock:
            Q = np.asarray(
                self.embedder.embed([format_query(self.template, task="", text=t) for t in texts]), dtype=np.float32
            )
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        routes = route(
            Q, self.centroids, self.leaf_ids, self.calibration, min_cosine=self.min_cosine,
            alternatives=self.alternatives,
        )  # fmt: skip
        return [
            Classification(
                path=self.paths[r.leaf],
                probability=r.probability,
                cosine=r.cosine,
                is_new=r.is_new,
                alternatives=[
                    Alternative(id=self.leaf_ids[k], name=self.leaves[k].name, probability=p) for k, p in r.alternatives
                ],
            )
            for r in routes
        ]


def stored_index(store: Store, config: Config) -> RoutingIndex:
    """The latest version in `store` set up as `config` says (its embedder, query template, routing settings)."""
    return RoutingIndex.from_store(
        store, embedder=make_embedder(config.embed),
        query_template=config.serve.query_template, embed=config.embed,
        routing=config.routing, min_cosine=config.refresh.assign_threshold,
    )  # fmt: skip


def classify_records(
    records: list[Record], *, store_dir: Path | str, out: Path | str, config: Config | None = None, batch: int = 256
) -> dict[str, Any]:
    """Route `records` against the latest taxonomy in `store_dir` and write one JSON line per record to `out`
    (id, source, version and the `Classification` fields); returns a summary. Config: the store's recorded one."""
    db = Path(store_dir) / "clado.db"
    if not db.is_file():
        raise RoutingError(f"{db} not found: --store must be the output directory of a `clado build`")
    with Store(db) as store:
        index = stored_index(store, config or stored_config(store))
    new = 0
    with staged_files(Path(out).parent) as staged, staged.path(Path(out).name).open("w", encoding="utf-8") as handle:
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            for record, result in zip(chunk, index.classify([r.as_text() for r in chunk])):
                new += result.is_new
                line = {
                    "id": record.id,
                    "source": f"{record.source_file}:{record.source_line}",
                    "version": index.version,
                }
                handle.write(json.dumps(line | result.model_dump(), ensure_ascii=False) + "\n")
    return {
        "version": index.version,
        "records": len(records),
        "new": new,
        "threshold": index.threshold,
        "out": str(out),
    }
