"""`clado eval`: build on a labelled data set and score it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clado.cli.app import ConfigOpt, app, console, load_config


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
