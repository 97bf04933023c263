"""The `clado` command line."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from clado.config import Config, ConfigError, defaults_toml

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build browsable taxonomies from conversations and reviews."
)
console = Console(stderr=True)
SKIPPED_SHOWN = 20
# Events of weak-model handling: invalid answers, failed requests, re-asks and the fallbacks they led to.
FALLBACK_EVENT = re.compile(
    r"_(fallback|invalid|invalid_output|transport_error|failed|empty|empty_name|empty_description|reask|clash_suffix"
    r"|baseline_grouping)$"
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see `clado config`)")]


def print_fallbacks(events: dict[str, int]) -> None:
    """A line with the run's non-zero weak-model handling counts ("name n, …"); nothing when there were none."""
    if fallbacks := ", ".join(f"{name} {n}" for name, n in sorted(events.items()) if n and FALLBACK_EVENT.search(name)):
        console.print(f"  re-asks and fallbacks: {fallbacks}", soft_wrap=True)


def load_config(path: Path | None, **overrides: object) -> Config:
    """Read the config file and apply command-line overrides given as dotted keys (llm.base_url=...)."""
    try:
        config = Config.load(path)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    return config.with_overrides(**overrides)


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
    from clado.pipeline.ingest import IngestError
    from clado.taxonomy.lock import StoreBusy

    cfg = load_config(
        config,
        **{"llm.base_url": llm_url, "llm.model": llm_model, "embed.model": embed_model, "llm.local_model": local_model},
        **({"ingest.skip_bad": True} if skip_bad else {}),
    )
    started = time.perf_counter()
    try:
        result = run_build(inputs, out=out, config=cfg, no_llm=no_llm, retry_failed=retry_failed, wait=wait)
    except (IngestError, StoreBusy) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
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
    for kind, path in result.outputs.items():
        console.print(f"  {kind:<9} {path}")
    counts = {
        k: summary[k] for k in ("records", "items", "clusters", "unassigned", "inputs", "duplicates", "truncated_input")
    }
    counts |= {"skipped": len(summary["skipped"]), "extraction_errors": len(summary["extraction_errors"])}
    print(json.dumps({"ok": True, "out": str(out), **counts}))


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="Labelled JSONL (e.g. ../shared/data/banking77.jsonl)", exists=True)],
    labels: Annotated[str, typer.Option(help="Gold label field (read only by the scorer)")],
    parent_field: Annotated[str | None, typer.Option(help="Gold parent label field, for top-level scores")] = None,
    text_field: Annotated[str, typer.Option(help="Text field")] = "text",
    messages_field: Annotated[str | None, typer.Option(help="Messages field (conversations)")] = None,
    split: Annotated[str | None, typer.Option(help="Keep only items of this split")] = None,
    sample: Annotated[int | None, typer.Option(help="Seeded random sample of this many items")] = None,
    seed: Annotated[int, typer.Option(help="Sampling and build seed")] = 0,
    no_llm: Annotated[
        bool, typer.Option("--no-llm", help="Cluster raw-text embeddings; no facets, keyword names")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here")] = None,
    out: Annotated[Path | None, typer.Option(help="Keep the build's outputs here")] = None,
    config: ConfigOpt = None,
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name on that server")] = None,
    local_model: Annotated[str | None, typer.Option(help="Embedded GGUF: default, small or a path")] = None,
    embed_model: Annotated[str | None, typer.Option(help="sentence-transformers model name or path")] = None,
) -> None:
    """Build a taxonomy for a labelled data set and score it (NMI, ARI, ACC, purity) against baselines."""
    from clado.eval.evaluate import evaluate, format_report

    cfg = load_config(
        config,
        **{"llm.base_url": llm_url, "llm.model": llm_model, "llm.local_model": local_model, "embed.model": embed_model},
        seed=seed,
    )
    report = evaluate(
        dataset, labels=labels, parent_field=parent_field, text_field=text_field, messages_field=messages_field,
        split=split, sample=sample, seed=seed, no_llm=no_llm, config=cfg, out=out,
    )  # fmt: skip
    print(format_report(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1, default=str))
        console.print(f"wrote {json_path}")


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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
    # SIGTERM (cron timeouts, kill) unwinds like Ctrl-C, so the embedded server and the store lock are released.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

import clado.cli.refresh  # noqa: E402,F401  (registers refresh, edit, diff, serve)
