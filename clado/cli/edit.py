"""`clado edit`: analyst edits kept in the store and re-applied after every refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import StoreOpt, WaitOpt, app, run_reporting


@app.command("edit")
def edit_cmd(
    op: Annotated[str, typer.Argument(help="rename NODE NAME | merge INTO NODE | move NODE PARENT | lock NODE | list")],
    params: Annotated[
        list[str] | None, typer.Argument(help="Node IDs (or unique prefixes of 6+ characters), name")
    ] = None,
    store: StoreOpt = Path("out"),
    description: Annotated[str | None, typer.Option(help="New description (rename)")] = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Rename, merge, move or lock a node; the edit is kept in the store and re-applied after every refresh."""
    from clado.pipeline.refresh import RefreshError, edit_store
    from clado.taxonomy.store import Store

    def action() -> dict[str, Any]:
        if op != "list":
            return edit_store(store, op, list(params or []), description=description, wait=wait)
        db = store / "clado.db"
        if not db.is_file():
            raise RefreshError(f"{db} not found: --store must be the output directory of a `clado build`")
        with Store(db) as opened:
            return {"edits": opened.edits()}

    run_reporting("edit", action)
