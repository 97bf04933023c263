"""`clado serve`: the routing API over a store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import ConfigOpt, StoreOpt, app, console, run_reporting
from clado.config import Config

TOKEN_ENV = "CLADO_SERVE_TOKEN"


def read_token(token_file: Path | None) -> str | None:
    """The bearer token from `token_file` (its first line), else from CLADO_SERVE_TOKEN; None when neither."""
    from clado.serve.app import ServeError

    if token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        lines = token_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ServeError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
    if not lines or not lines[0].strip():
        raise ServeError(f"{token_file}: the token file is empty; its first line is the bearer token")
    return lines[0].strip()


@app.command("serve")
def serve_cmd(
    store: StoreOpt = Path("out"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(help=f"File whose first line is the bearer token required on /v1 routes (else {TOKEN_ENV})"),
    ] = None,
    token: Annotated[str | None, typer.Option(hidden=True, help="Refused: visible to every user in `ps`")] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the routing API: POST /v1/classify, GET /v1/taxonomy, GET /healthz."""
    from clado.serve.app import ServeError, check_bind, serve

    def action() -> dict[str, Any]:
        if token is not None:
            raise ServeError(f"--token on the command line is visible to every user in `ps`: set {TOKEN_ENV} or "
                             "put the token in a file and pass --token-file")  # fmt: skip
        secret = read_token(token_file)
        check_bind(host, secret)
        cfg = Config.load(config) if config else None
        console.print(f"serving {store} on http://{host}:{port} (Ctrl-C stops)")
        serve(store, host=host, port=port, token=secret, config=cfg)
        return {"stopped": True}

    run_reporting("serve", action)
