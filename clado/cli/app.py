"""The `clado` Typer app, its console, and the options and helpers the command modules share."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from clado.config import Config, ConfigError

if TYPE_CHECKING:
    from clado.taxonomy.records import Item, Taxonomy

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build browsable taxonomies from conversations and reviews."
)
console = Console(stderr=True)
SKIPPED_SHOWN = 20
TOP_NODES_SHOWN = 12
# Events of weak-model handling: invalid answers, failed requests, re-asks and the fallbacks they led to.
FALLBACK_EVENT = re.compile(
    r"_(fallback|invalid|invalid_output|transport_error|failed|empty|empty_name|empty_description|reask|clash_keyword_name"
    r"|baseline_grouping)$"
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see `clado config`)")]


def print_fallbacks(events: dict[str, int]) -> None:
    """A line with the run's non-zero weak-model handling counts ("name n, …"); nothing when there were none."""
    if fallbacks := ", ".join(f"{name} {n}" for name, n in sorted(events.items()) if n and FALLBACK_EVENT.search(name)):
        console.print(f"  re-asks and fallbacks: {fallbacks}", soft_wrap=True)


def print_top_nodes(taxonomy: Taxonomy, items: dict[str, Item], *, shown: int = TOP_NODES_SHOWN) -> None:
    """The top-level topics, largest first, with their sizes and shares of all input rows (repeats counted)."""
    from clado.taxonomy.counts import occurrences

    sizes = {n.id: occurrences(n.member_ids, items) for n in taxonomy.roots()}
    top = sorted(taxonomy.roots(), key=lambda n: (-sizes[n.id], n.name))
    unassigned = occurrences(taxonomy.unassigned_ids, items)
    total = sum(sizes.values()) + unassigned
    if not top or not total:
        return
    console.print(f"  top-level topics ({len(top)}):")
    for node in top[:shown]:
        size = sizes[node.id]
        console.print(f"    {size:>7,}  {100 * size / total:5.1f}%  {escape(node.name)}", soft_wrap=True)
    if len(top) > shown:
        console.print(f"    … and {len(top) - shown} more (see report.md)")
    if taxonomy.unassigned_ids:
        console.print(f"    {unassigned:>7,}  {100 * unassigned / total:5.1f}%  (unassigned)")


def load_config(path: Path | None, **overrides: object) -> Config:
    """Read the config file and apply command-line overrides given as dotted keys (llm.base_url=...)."""
    try:
        return Config.load(path).with_overrides(**overrides)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="A build's output directory (holds clado.db)")]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait for another process writing the store (-1 = forever)")]
SUMMARY_KEYS = (
    "version", "previous_version", "changed", "rebuild", "records_in", "records_known", "records_new", "items_new",
    "assigned_existing", "pooled_new", "pool_share", "new_clusters", "joined_existing", "unassigned", "ids_kept",
    "ids_new", "max_centroid_drift", "rebuild_recommended", "rebuild_reasons", "diff",
)  # fmt: skip


def failure_code(exc: BaseException) -> int | None:
    """The exit code of an expected failure: 2 bad input or config (a server refusing the key or model
    included), 3 store busy, 4 the LLM failed (server down or hung, too many failed records); None otherwise."""
    from clado.backends.llm_errors import LLMConfigError, LLMUnavailable
    from clado.pipeline.classify import RoutingError
    from clado.pipeline.failures import ExtractionFailed
    from clado.pipeline.ingest import IngestError
    from clado.pipeline.refresh import RefreshError
    from clado.taxonomy.edits import EditError
    from clado.taxonomy.lock import StoreBusy

    if isinstance(exc, StoreBusy):
        return 3
    if isinstance(exc, (IngestError, ConfigError, RefreshError, EditError, RoutingError, LLMConfigError)):
        return 2
    if isinstance(exc, (LLMUnavailable, ExtractionFailed)):
        return 4
    return None


def exit_failed(command: str, code: int, error: str) -> NoReturn:
    """One error line on stderr, the one-line JSON error on stdout, and exit with `code`."""
    console.print(f"[red]error:[/red] {escape(error)}", soft_wrap=True)
    print(json.dumps({"ok": False, "command": command, "exit_code": code, "error": error}))
    raise typer.Exit(code)


def run_reporting(command: str, action: Callable[[], dict[str, Any]], *, print_summary: bool = True) -> None:
    """Run `action` and print its summary as one JSON line (unless `print_summary` is false); map failures
    to exit codes (`failure_code`, 1 for anything else) with a one-line JSON error."""
    try:
        summary = action()
    except Exception as exc:
        code = failure_code(exc)
        if code is None:
            console.print_exception()
            code, error = 1, f"{type(exc).__name__}: {exc}"
        else:
            error = str(exc)
        exit_failed(command, code, error)
    if print_summary:
        print(json.dumps({"ok": True, "command": command, **summary}, default=str))


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
