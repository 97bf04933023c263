"""`clado build`: a taxonomy from input files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from clado.cli.app import (
    SKIPPED_SHOWN,
    ConfigOpt,
    app,
    console,
    exit_failed,
    failure_code,
    load_config,
    print_fallbacks,
    print_top_nodes,
)


@app.command()
def build(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL, CSV or text files", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (holds clado.db and the reports)")] = Path(
        "out"
    ),
    config: ConfigOpt = None,
    llm_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL; default: start the embedded server")
    ] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name on that server")] = None,
    embed_model: Annotated[str | None, typer.Option(help="sentence-transformers model name or path")] = None,
    local_model: Annotated[
        str | None, typer.Option(help="Embedded GGUF: default (1.5B), small (0.5B) or a path")
    ] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed input lines and list them")] = False,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Cluster raw texts, names from keywords, no LLM")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry records whose extraction failed before")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for another process writing the same store (-1 = forever)")
    ] = 0.0,
) -> None:
    """Build a taxonomy and write taxonomy.html, taxonomy.json, report.md and assignments.csv into OUT."""
    from clado.pipeline.build import build as run_build
    from clado.pipeline.failures import ERROR_REPORT

    cfg = load_config(
        config,
        **{"llm.base_url": llm_url, "llm.model": llm_model, "embed.model": embed_model, "llm.local_model": local_model},
        **({"ingest.skip_bad": True} if skip_bad else {}),
    )
    started = time.perf_counter()
    try:
        result = run_build(inputs, out=out, config=cfg, no_llm=no_llm, retry_failed=retry_failed, wait=wait)
    except Exception as exc:
        if (code := failure_code(exc)) is None:
            raise
        exit_failed("build", code, str(exc))
    summary = result.summary
    for skip in summary["skipped"][:SKIPPED_SHOWN]:
        console.print(f"  skipped {escape(skip['file'])}:{skip['line']}: {escape(skip['reason'])}", soft_wrap=True)
    if len(summary["skipped"]) > SKIPPED_SHOWN:
        console.print(
            f"  … and {len(summary['skipped']) - SKIPPED_SHOWN} more skipped lines (see the run summary in clado.db)"
        )
    console.print(
        f"[green]built[/green] {summary['clusters']} leaf topics over {summary['items']} items from "
        f"{summary['records']} records in {time.perf_counter() - started:.1f} s "
        f"({summary['duplicates']} duplicates, {len(summary['skipped'])} skipped, {summary['unassigned']} unassigned, "
        f"{len(summary['extraction_errors'])} extraction errors)"
    )
    print_fallbacks(summary["events"])
    print_top_nodes(result.taxonomy, result.items)
    for kind, path in result.outputs.items():
        console.print(f"  {kind:<9} {path}")
    if summary["extraction_errors"]:
        console.print(f"  {'errors':<9} {out / ERROR_REPORT}")
    counts = {
        k: summary[k] for k in ("records", "items", "clusters", "unassigned", "inputs", "duplicates", "truncated_input")
    }
    counts |= {"skipped": len(summary["skipped"]), "extraction_errors": len(summary["extraction_errors"])}
    print(json.dumps({"ok": True, "out": str(out), **counts}))
