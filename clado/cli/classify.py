"""`clado classify`: batch routing of a file against a stored taxonomy, the same answers as `/v1/classify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clado.cli.app import ConfigOpt, StoreOpt, app, run_reporting, store_config


@app.command("classify")
def classify_cmd(
    inputs: Annotated[
        list[Path], typer.Argument(help="JSONL, CSV or text files to route", exists=True, dir_okay=False)
    ],
    store: StoreOpt = Path("out"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions, one JSON line per record")] = Path(
        "predictions.jsonl"
    ),
    config: ConfigOpt = None,
) -> None:
    """Route every record of INPUTS: leaf path, probability, cosine, is_new and the next most probable leaves."""
    from clado.pipeline.classify import classify_records
    from clado.pipeline.ingest import ingest

    def action() -> dict[str, Any]:
        cfg = store_config(store, config, {})
        ingested = ingest(inputs, settings=cfg.ingest)
        summary = classify_records(ingested.records, store_dir=store, out=out, config=cfg)
        return summary | {"duplicates": ingested.duplicates, "skipped": len(ingested.skipped)}

    run_reporting("classify", action)
