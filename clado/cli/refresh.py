"""`clado refresh`, `clado edit`, `clado diff` and `clado serve`: cron-friendly commands on an existing store.

Exit codes: 0 ok, 2 bad input (files, config, node ids, an unsafe bind), 3 store busy (another writer
holds the lock), 1 anything else. refresh, edit and diff end with a one-line JSON summary on stdout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import ConfigOpt, app, console, print_fallbacks
from clado.config import Config, ConfigError

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="A build's output directory (holds clado.db)")]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait for another process writing the store (-1 = forever)")]
SUMMARY_KEYS = (
    "version", "previous_version", "changed", "rebuild", "records_in", "records_known", "records_new", "items_new",
    "assigned_existing", "pooled_new", "pool_share", "new_clusters", "joined_existing", "unassigned", "ids_kept",
    "ids_new", "max_centroid_drift", "rebuild_recommended", "rebuild_reasons", "diff",
)  # fmt: skip


def run_reporting(command: str, action: Callable[[], dict[str, Any]], *, print_summary: bool = True) -> None:
    """Run `action` and print its summary as one JSON line (unless `print_summary` is false); map failures
    to exit codes 2, 3 and 1 with a one-line JSON error."""
    from clado.pipeline.ingest import IngestError
    from clado.pipeline.refresh import RefreshError
    from clado.serve.app import ServeError
    from clado.taxonomy.edits import EditError
    from clado.taxonomy.lock import StoreBusy

    try:
        summary = action()
    except StoreBusy as exc:
        code, error = 3, str(exc)
    except (IngestError, ConfigError, RefreshError, EditError, ServeError) as exc:
        code, error = 2, str(exc)
    except Exception as exc:
        console.print_exception()
        code, error = 1, f"{type(exc).__name__}: {exc}"
    else:
        if print_summary:
            print(json.dumps({"ok": True, "command": command, **summary}, default=str))
        return
    console.print(f"[red]error:[/red] {error}")
    print(json.dumps({"ok": False, "command": command, "exit_code": code, "error": error}))
    raise typer.Exit(code)


def store_config(store_dir: Path, path: Path | None, overrides: dict[str, Any]) -> Config:
    """The config file given, else the one recorded with the store's latest run; then the dotted overrides."""
    from clado.pipeline.refresh import RefreshError, stored_config
    from clado.taxonomy.store import Store

    if path is not None:
        config = Config.load(path)
    else:
        db = store_dir / "clado.db"
        if not db.is_file():
            raise RefreshError(f"{db} not found: --store must be the output directory of a `clado build`")
        with Store(db) as store:
            config = stored_config(store)
    return config.with_overrides(**overrides)


@app.command("refresh")
def refresh_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="New JSONL, CSV or text files", exists=True, dir_okay=False)
    ] = None,
    store: StoreOpt = Path("out"),
    config: ConfigOpt = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild from all records; node IDs carried over by member overlap")
    ] = False,
    wait: WaitOpt = 0.0,
    llm_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL; default: the recorded config")
    ] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name on that server")] = None,
    local_model: Annotated[
        str | None, typer.Option(help="Embedded GGUF: default (1.5B), small (0.5B) or a path")
    ] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed input lines and list them")] = False,
) -> None:
    """Add new records to the taxonomy in STORE (only unseen records are extracted); write a new version and diff.md."""
    from clado.pipeline.refresh import RefreshError, refresh

    def action() -> dict[str, Any]:
        if not inputs and not rebuild:
            raise RefreshError("no input files: give the new files, or --rebuild to rebuild from the stored records")
        overrides = {"llm.base_url": llm_url, "llm.model": llm_model, "llm.local_model": local_model}
        cfg = store_config(store, config, overrides | ({"ingest.skip_bad": True} if skip_bad else {}))
        started = time.perf_counter()
        result = refresh(list(inputs or []), store_dir=store, config=cfg, rebuild=rebuild, wait=wait)
        s = result.summary
        verb = "rebuilt" if rebuild else "refreshed" if s["changed"] else "nothing new for"
        console.print(
            f"[green]{verb}[/green] {store} → version {s['version']}: {s['records_new']} new records "
            f"({s['records_known']} already seen) in {time.perf_counter() - started:.1f} s"
        )
        print_fallbacks(s.get("events", {}))
        if s.get("rebuild_recommended"):
            console.print("[yellow]rebuild recommended:[/yellow] " + "; ".join(s["rebuild_reasons"]))
        llm = s.get("llm") or {}
        return {k: s[k] for k in SUMMARY_KEYS if k in s} | {"llm_calls": llm.get("calls", 0), "out": str(store)}

    run_reporting("refresh", action)


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


@app.command("diff")
def diff_cmd(
    store: StoreOpt = Path("out"),
    from_version: Annotated[
        int | None, typer.Option("--from", help="Old version (default: the one before --to)")
    ] = None,
    to_version: Annotated[int | None, typer.Option("--to", help="New version (default: the latest)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff as JSON instead of Markdown")] = False,
) -> None:
    """Print what changed between two taxonomy versions, as Markdown or (--json) one line of JSON."""
    from clado.pipeline.refresh import RefreshError
    from clado.taxonomy.diff import diff_markdown, diff_taxonomies
    from clado.taxonomy.store import Store

    def action() -> dict[str, Any]:
        db = store / "clado.db"
        if not db.is_file():
            raise RefreshError(f"{db} not found: --store must be the output directory of a `clado build`")
        with Store(db) as opened:
            versions = [v["version"] for v in opened.versions()]
            new_v = to_version if to_version is not None else (versions[-1] if versions else None)
            old_v = (
                from_version
                if from_version is not None
                else max((v for v in versions if new_v and v < new_v), default=None)
            )
            old = opened.taxonomy(old_v) if old_v is not None else None
            new = opened.taxonomy(new_v) if new_v is not None else None
        if old is None or new is None:
            raise RefreshError(
                f"need two versions to compare (store has {versions or 'none'}; asked {old_v} → {new_v})"
            )
        diff = diff_taxonomies(old, new)
        if not as_json:
            print(diff_markdown(diff), end="")
        return {"diff": diff.model_dump(mode="json"), "counts": diff.counts()}

    run_reporting("diff", action, print_summary=as_json)


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
