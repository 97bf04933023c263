"""Give a build its LLM client: the configured server, or the embedded llama.cpp server started for the run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clado.backends.llm import LLMClient, LLMSettings
from clado.taxonomy.store import Store


@asynccontextmanager
async def llm_client(settings: LLMSettings, *, seed: int, store: Store | None) -> AsyncIterator[LLMClient]:
    """An LLMClient for `settings` sending sampling seed `seed`; with no base_url, fetch the embedded model and
    serve it for the duration."""
    api_key = os.environ.get("CLADO_LLM_API_KEY", settings.api_key)
    if settings.base_url:
        client = LLMClient(settings.model_copy(update={"api_key": api_key}), seed=seed, store=store)
        try:
            yield client
        finally:
            await client.aclose()
        return
    from clado.backends.local_server import LocalServer
    from clado.backends.model_fetch import fetch_model

    model_path = fetch_model(settings.local_model)
    with LocalServer(model_path, n_ctx=settings.n_ctx) as server:
        local = settings.model_copy(
            update={
                "base_url": server.base_url,
                "model": settings.model or server.model_name,
                "schema_dialect": "json_object" if settings.schema_dialect == "auto" else settings.schema_dialect,
                "max_concurrency": min(settings.max_concurrency, 2),
            }
        )
        client = LLMClient(local, seed=seed, store=store)
        try:
            yield client
        finally:
            await client.aclose()
