"""Settings of the routing API (`clado serve`); self-contained, so that clado.config can carry them as a section.

The bearer token is not a setting: it comes from CLADO_SERVE_TOKEN or `--token-file`, never from a file that
is recorded with a run, nor from the command line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Limits of the routing API (`clado serve`)."""

    model_config = ConfigDict(extra="forbid")
    max_batch: int = Field(64, ge=1, le=10_000, description="Most texts per /v1/classify request")
    max_body_bytes: int = Field(1_000_000, ge=1024, le=1_000_000_000, description="Largest request body accepted")
    max_text_chars: int = Field(4000, ge=1, le=1_000_000, description="Longest text accepted")
    query_template: str = Field(
        "auto",
        description="How a query is worded before embedding, containing {text}; auto = the facet line the leaves "
        "were clustered on (e.g. 'Issue: {text}' for reviews), else the raw text",
    )
    reload_seconds: float = Field(
        30.0, ge=0, le=86_400, description="How often the store is checked for a newer taxonomy version"
    )
    limit_concurrency: int = Field(
        32, ge=2, le=10_000, description="Most connections and requests at once; clients beyond it get 503"
    )
    keep_alive_seconds: float = Field(
        5.0, gt=0, le=600, description="An idle keep-alive connection is closed after this"
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="A request not answered within this (its body included) gets 408 or 503"
    )
