"""The routing API (`clado serve`): classify texts into the stored taxonomy, flagging what fits no topic.

`POST /v1/classify {"texts": [...]}` routes each text as `clado.pipeline.classify` does (the same answer as
`clado classify`): the path (top node to leaf) of its most probable leaf, the calibrated `probability`, the
`cosine` to the leaf's centroid, `is_new: true` when no leaf is probable enough (a new problem), and the next most
probable leaves. `GET /v1/taxonomy` lists the nodes; `GET /healthz` says "ok" (and, to a caller with the token, the
version served). The server re-reads the store when a refresh has written a newer version.

Security: binds 127.0.0.1 by default; any other address needs a bearer token (`check_bind`), checked before
a request's body is read. Requests over `max_body_bytes` get 413, batches over `max_batch` or texts over
`max_text_chars` get 422; uvicorn runs with `limit_concurrency`, a keep-alive and a request timeout.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from clado.backends.embed import Embedder, EmbedSettings, make_embedder
from clado.config import Config
from clado.pipeline.classify import Classification, RoutingError, RoutingIndex
from clado.pipeline.refresh import stored_config
from clado.pipeline.route import RoutingSettings
from clado.serve.middleware import AUTHORISED, BearerAuth, BodyLimit, RequestTimeout
from clado.serve.settings import ServeSettings
from clado.taxonomy.store import Store

if TYPE_CHECKING:
    import uvicorn


class ServeError(RoutingError):
    """The API cannot start: unsafe bind address, empty store, another embedder."""


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(description="Texts to route, one result each in the same order")


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


class RoutingService:
    """Serves the latest taxonomy version, checking the store for a newer one at most every `reload_seconds`."""

    def __init__(
        self,
        store: Store,
        *,
        embedder: Embedder,
        settings: ServeSettings,
        embed: EmbedSettings | None = None,
        routing: RoutingSettings | None = None,
        min_cosine: float | None = None,
    ):
        self.store, self.embedder, self.settings, self.embed = store, embedder, settings, embed
        self.routing, self.min_cosine = routing, min_cosine
        self.index = self._load()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _load(self) -> RoutingIndex:
        return RoutingIndex.from_store(
            self.store, embedder=self.embedder, query_template=self.settings.query_template, embed=self.embed,
            routing=self.routing, min_cosine=self.min_cosine,
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
) -> None:
    """Serve the taxonomy in `store_dir` until interrupted (uvicorn, one process); limits from `config.serve`,
    the new-topic threshold from `config.refresh` (`config`: else the one recorded with the store's latest run)."""
    import uvicorn

    check_bind(host, token)
    db = Path(store_dir) / "clado.db"
    if not db.is_file():
        raise ServeError(f"{db} not found: --store must be the output directory of a `clado build`")
    store = Store(db)
    config = config or stored_config(store)
    settings = config.serve
    embedder = make_embedder(config.embed)
    service = RoutingService(
        store, embedder=embedder, settings=settings, embed=config.embed, routing=config.routing,
        min_cosine=config.refresh.assign_threshold,
    )  # fmt: skip
    app = create_app(service, token=token, settings=settings)
    try:
        uvicorn.Server(server_config(app, host=host, port=port, settings=settings)).run()
    finally:
        store.close()
