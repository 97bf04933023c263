"""`clado fetch-model`, `clado server` and `clado config`: the embedded model and the settings."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from clado.cli.app import app, console
from clado.config import defaults_toml


@app.command("fetch-model")
def fetch_model_cmd(
    choice: Annotated[str, typer.Argument(help="default (1.5B), small (0.5B) or tiny")] = "default",
) -> None:
    """Download and verify an embedded GGUF model into the user cache; print its path."""
    from clado.backends.model_fetch import fetch_model

    print(fetch_model(choice))


@app.command()
def server(
    model: Annotated[str, typer.Option(help="default (1.5B), small (0.5B) or a .gguf path")] = "default",
    n_ctx: Annotated[int, typer.Option(help="Context window")] = 4096,
) -> None:
    """Start the embedded llama.cpp server on 127.0.0.1 and keep it running until Ctrl-C."""
    from clado.backends.local_server import LocalServer
    from clado.backends.model_fetch import fetch_model

    with LocalServer(fetch_model(model), n_ctx=n_ctx) as running:
        console.print(f"serving [bold]{running.model_name}[/bold] at {running.base_url} (Ctrl-C stops)")
        try:
            while running.process is not None and running.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@app.command("config")
def config_cmd() -> None:
    """Print every setting with its default, as TOML."""
    print(defaults_toml(), end="")
