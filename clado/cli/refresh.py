"""`clado refresh` and `clado diff`: new records into an existing store, and what changed between versions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import (
    SUMMARY_KEYS,
    ConfigOpt,
    StoreOpt,
    WaitOpt,
    app,
    console,
    print_fallbacks,
    run_reporting,
    store_config,
)


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
