"""`clado serve`: the routing API over a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import ConfigOpt, StoreOpt, app, console, run_reporting
from clado.config import Config


@app.command("serve")
def serve_cmd(
    store: StoreOpt = Path("out"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    token: Annotated[
        str | None, typer.Option(envvar="CLADO_SERVE_TOKEN", help="Bearer token required on /v1 routes")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the routing API: POST /v1/classify, GET /v1/taxonomy, GET /healthz."""
    from clado.serve.app import check_bind, serve

    def action() -> dict[str, Any]:
        check_bind(host, token)
        cfg = Config.load(config) if config else None
        console.print(f"serving {store} on http://{host}:{port} (Ctrl-C stops)")
        serve(store, host=host, port=port, token=token, config=cfg)
        return {"stopped": True}

    run_reporting("serve", action)
