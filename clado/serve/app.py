"""The routing API (`clado serve`): classify texts into the stored taxonomy, flagging what fits no topic.

`POST /v1/classify {"texts": [...]}` embeds each text in process with the taxonomy's own embedder and
returns the path (top node to leaf) of the leaf whose centroid is nearest, the cosine to that centroid as
`confidence`, and `is_new: true` when it is below the refresh's assignment threshold (nothing fits: a new
problem). `GET /v1/taxonomy` lists the nodes; `GET /healthz` says "ok" (and, to a caller with the token, the
version served). The server re-reads the store when a refresh has written a newer version.

Limitation: no LLM runs at classify time, so queries are not turned into facets. Leaves are centroids of
the clustered facet texts (e.g. "Aspect: …\\nIssue: …" for reviews), so a query is worded like the main
facet line ("Issue: {text}") before embedding (`query_template = "auto"`); confidences of raw texts against
facet centroids are lower than those of the items themselves.

Security: binds 127.0.0.1 by default; any other address needs a bearer token (`check_bind`), checked before
a request's body is read. Requests over `max_body_bytes` get 413, batches over `max_batch` or texts over
`max_text_chars` get 422; uvicorn runs with `limit_concurrency`, a keep-alive and a request timeout.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from clado.backends.embed import Embedder, EmbedSettings, format_query, make_embedder
from clado.backends.idf_pooling import stored_item_embedder
from clado.config import Config
from clado.pipeline.refresh import member_centroids, refresh_settings, stored_config, taxonomy_items
from clado.serve.middleware import AUTHORISED, BearerAuth, BodyLimit, RequestTimeout
from clado.serve.settings import ServeSettings
from clado.taxonomy.records import Node, Taxonomy
from clado.taxonomy.store import Store

if TYPE_CHECKING:
    import uvicorn

FACET_LINE = re.compile(r"^([A-Z][A-Za-z ]{0,30}): (.*)$")
TEMPLATE_SAMPLE = 500


class ServeError(ValueError):
    """The API cannot start: unsafe bind address, empty store, another embedder."""


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(description="Texts to route, one result each in the same order")


class Step(BaseModel):
    id: str
    name: str
    level: int


class Classification(BaseModel):
    path: list[Step] = Field(description="From the top-level node down to the nearest leaf")
    confidence: float = Field(description="Cosine of the text to the leaf's centroid")
    is_new: bool = Field(description="True when the confidence is below the assignment threshold: no topic fits")


class ClassifyResponse(BaseModel):
    version: int
    threshold: float
    results: list[Classification]


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a bearer token."""
    if not is_loopback(host) and not token:
        raise ServeError(
            f"refusing to bind {host} without a token: set CLADO_SERVE_TOKEN or pass --token-file, or bind 127.0.0.1"
        )


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


def create_app(service: RoutingService, *, token: str | None, settings: ServeSettings) -> FastAPI:
    """The FastAPI app; with a `token`, every route but /healthz needs `Authorization: Bearer <token>`."""
    app = FastAPI(title="clado routing API", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        """Says "ok" to anyone; the version, leaves and embedding model only to an authorised caller (one with
        the token, when the server has one)."""
        if not request.scope.get(AUTHORISED):
            return {"status": "ok"}
        index = service.current()
        return {
            "status": "ok",
            "version": index.version,
            "leaves": len(index.leaves),
            "embed_model": service.embedder.model_id,
        }

    @app.get("/v1/taxonomy")
    def taxonomy() -> dict[str, Any]:
        tax = service.current().taxonomy
        nodes = [n.model_dump(include={"id", "parent_id", "level", "name", "description", "size"}) for n in tax.nodes]
        return {
            "version": tax.version,
            "created_at": tax.created_at,
            "nodes": nodes,
            "unassigned": len(tax.unassigned_ids),
        }

    @app.post("/v1/classify", response_model=ClassifyResponse)
    def classify(body: ClassifyRequest) -> ClassifyResponse:
        if not body.texts:
            raise HTTPException(422, "texts is empty: send at least one text")
        if len(body.texts) > settings.max_batch:
            raise HTTPException(422, f"{len(body.texts)} texts in one request; at most {settings.max_batch}")
        too_long = [i for i, t in enumerate(body.texts) if len(t) > settings.max_text_chars]
        if too_long:
            raise HTTPException(422, f"texts {too_long[:10]} are longer than {settings.max_text_chars} characters")
        index = service.current()
        return ClassifyResponse(version=index.version, threshold=index.threshold, results=index.classify(body.texts))

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # the last added runs first
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_seconds)
    app.add_middleware(BearerAuth, token=token)
    return app


def server_config(app: FastAPI, *, host: str, port: int, settings: ServeSettings) -> uvicorn.Config:
    """uvicorn's config for `app`: connections bounded, idle ones closed, no Server header."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.keep_alive_seconds, server_header=False,  # type: ignore[arg-type]  # typed int, takes fractions
    )  # fmt: skip


def serve(
    store_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    config: Config | None = None,
    settings: ServeSettings | None = None,
) -> None:
    """Serve the taxonomy in `store_dir` until interrupted (uvicorn, one process)."""
    import uvicorn

    check_bind(host, token)
    db = Path(store_dir) / "clado.db"
    if not db.is_file():
        raise ServeError(f"{db} not found: --store must be the output directory of a `clado build`")
    store = Store(db)
    config = config or stored_config(store)
    settings = settings or getattr(config, "serve", None) or ServeSettings()
    embedder = make_embedder(config.embed)
    service = RoutingService(
        store,
        embedder=embedder,
        threshold=refresh_settings(config).assign_threshold,
        settings=settings,
        embed=config.embed,
    )
    app = create_app(service, token=token, settings=settings)
    try:
        uvicorn.Server(server_config(app, host=host, port=port, settings=settings)).run()
    finally:
        store.close()
