"""The routing API (`clado serve`): classify texts into the stored taxonomy over HTTP (the routing is in
clado/serve/routing.py).

`POST /v1/classify {"texts": [...]}` returns each text's path (top node to leaf), `confidence` and `is_new`;
`GET /v1/taxonomy` lists the nodes; `GET /healthz` says "ok" (and, to a caller with the token, the version
served). The server re-reads the store when a refresh has written a newer version.

Security: binds 127.0.0.1 by default; any other address needs a bearer token (`check_bind`), checked before
a request's body is read. Requests over `max_body_bytes` get 413, batches over `max_batch` or texts over
`max_text_chars` get 422; uvicorn runs with `limit_concurrency`, a keep-alive and a request timeout.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from clado.config import Config
from clado.serve.middleware import AUTHORISED, BearerAuth, BodyLimit, RequestTimeout
from clado.serve.routing import Classification, RoutingService, ServeError, open_store
from clado.serve.settings import ServeSettings

if TYPE_CHECKING:
    import uvicorn


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
    store = open_store(store_dir)
    service = RoutingService.for_store(store, config=config, settings=settings)
    app = create_app(service, token=token, settings=service.settings)
    try:
        uvicorn.Server(server_config(app, host=host, port=port, settings=service.settings)).run()
    finally:
        store.close()
