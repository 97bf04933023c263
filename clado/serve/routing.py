"""Routing texts into a stored taxonomy: the nearest leaf by centroid, flagging what fits no topic.

Each text is embedded in process with the taxonomy's own embedder and gets the path (top node to leaf) of the
leaf whose centroid is nearest, the cosine to that centroid as `confidence`, and `is_new: true` when it is below
the refresh's assignment threshold (nothing fits: a new problem). Used by `clado serve` and `clado.classify`.

Limitation: no LLM runs at classify time, so queries are not turned into facets. Leaves are centroids of
the clustered facet texts (e.g. "Aspect: …\\nIssue: …" for reviews), so a query is worded like the main
facet line ("Issue: {text}") before embedding (`query_template = "auto"`); confidences of raw texts against
facet centroids are lower than those of the items themselves.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from clado.backends.embed import Embedder, EmbedSettings, format_query, make_embedder
from clado.backends.idf_pooling import stored_item_embedder
from clado.config import Config
from clado.pipeline.refresh import member_centroids, refresh_settings, stored_config, taxonomy_items
from clado.serve.settings import ServeSettings
from clado.taxonomy.records import Node, Taxonomy
from clado.taxonomy.store import Store

FACET_LINE = re.compile(r"^([A-Z][A-Za-z ]{0,30}): (.*)$")
TEMPLATE_SAMPLE = 500


class ServeError(ValueError):
    """The API cannot start: unsafe bind address, empty store, another embedder."""


class Step(BaseModel):
    id: str
    name: str
    level: int


class Classification(BaseModel):
    path: list[Step] = Field(description="From the top-level node down to the nearest leaf")
    confidence: float = Field(description="Cosine of the text to the leaf's centroid")
    is_new: bool = Field(description="True when the confidence is below the assignment threshold: no topic fits")


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
    """One taxonomy version ready to route: unit leaf centroids and each leaf's path from the top."""

    def __init__(
        self, taxonomy: Taxonomy, centroids: np.ndarray, *, embedder: Embedder, threshold: float, template: str
    ):
        self.taxonomy = taxonomy
        self.version = taxonomy.version
        self.leaves = taxonomy.leaves()
        self.centroids = centroids
        self.embedder = embedder
        self.threshold = threshold
        self.template = template
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
        threshold: float,
        query_template: str,
        embed: EmbedSettings | None = None,
    ) -> RoutingIndex:
        """The latest version in `store`, with centroids from the stored (cached) embeddings of its items.

        With `embed` (the config's embedding settings), texts are embedded as the taxonomy's items were (IDF pooling)."""
        taxonomy = store.taxonomy()
        if taxonomy is None:
            raise ServeError(f"{store.path} holds no taxonomy: run `clado build` first")
        if embed is not None:
            embedder = stored_item_embedder(embedder, embed, store, taxonomy.fingerprint)
        if taxonomy.fingerprint.get("embed_model") != embedder.model_id:
            raise ServeError(
                f"the taxonomy was embedded with {taxonomy.fingerprint.get('embed_model')!r} but the config gives "
                f"{embedder.model_id!r}"
            )
        items = taxonomy_items(store, taxonomy, embedder=embedder, records={r.id: r for r in store.records()})
        leaves = taxonomy.leaves()
        centroids = member_centroids(leaves, items.rows(), items.vectors)
        members = {m for leaf in leaves for m in leaf.member_ids}
        template = query_template
        if template == "auto":
            template = query_template_for([v.text for v in items.values if v.item_id in members])
        return cls(taxonomy, centroids, embedder=embedder, threshold=threshold, template=template)

    def classify(self, texts: list[str]) -> list[Classification]:
        """The nearest leaf of each text, with its path, confidence and is_new flag."""
        if not self.leaves:
            return [Classification(path=[], confidence=0.0, is_new=True) for _ in texts]
        with self._embed_lock:
            Q = np.asarray(
                self.embedder.embed([format_query(self.template, task="", text=t) for t in texts]), dtype=np.float32
            )
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        sims = Q @ self.centroids.T
        best = sims.argmax(axis=1)
        out = []
        for row, leaf in enumerate(best.tolist()):
            confidence = round(float(sims[row, leaf]), 4)
            out.append(Classification(path=self.paths[leaf], confidence=confidence, is_new=confidence < self.threshold))
        return out


class RoutingService:
    """Serves the latest taxonomy version, checking the store for a newer one at most every `reload_seconds`."""

    def __init__(
        self,
        store: Store,
        *,
        embedder: Embedder,
        threshold: float,
        settings: ServeSettings,
        embed: EmbedSettings | None = None,
    ):
        self.store, self.embedder, self.threshold, self.settings, self.embed = (
            store,
            embedder,
            threshold,
            settings,
            embed,
        )
        self.index = self._load()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def for_store(
        cls, store: Store, *, config: Config | None = None, settings: ServeSettings | None = None
    ) -> RoutingService:
        """A service over `store` set up from `config` (default: the one recorded with the store's latest run):
        its embedder, the refresh's assignment threshold and the serve settings."""
        config = config or stored_config(store)
        settings = settings or getattr(config, "serve", None) or ServeSettings()
        return cls(
            store,
            embedder=make_embedder(config.embed),
            threshold=refresh_settings(config).assign_threshold,
            settings=settings,
            embed=config.embed,
        )

    def _load(self) -> RoutingIndex:
        return RoutingIndex.from_store(
            self.store, embedder=self.embedder, threshold=self.threshold, query_template=self.settings.query_template,
            embed=self.embed,
        )  # fmt: skip

    def current(self) -> RoutingIndex:
        if time.monotonic() - self._checked >= self.settings.reload_seconds:
            with self._lock:
                if time.monotonic() - self._checked >= self.settings.reload_seconds:
                    self._checked = time.monotonic()
                    latest = max((v["version"] for v in self.store.versions()), default=self.index.version)
                    if latest != self.index.version:
                        self.index = self._load()
        return self.index


def open_store(store_dir: Path | str) -> Store:
    """The store in a build's output directory; ServeError when there is none."""
    db = Path(store_dir) / "clado.db"
    if not db.is_file():
        raise ServeError(f"{db} not found: --store must be the output directory of a `clado build`")
    return Store(db)
