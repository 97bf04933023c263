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
    confusion: Annotated[Path | None, typer.Option(help="Write the leaf confusion matrix as a PNG here")] = None,
    open_set: Annotated[
        bool, typer.Option("--open-set", help="Leave classes out: score new-problem detection and routing")
    ] = False,
    known_share: Annotated[float, typer.Option(help="--open-set: share of the classes the build sees")] = 0.8,
    ood_split: Annotated[
        str | None, typer.Option(help="--open-set: also route this split as out of scope (CLINC150: oos_test)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Keep the build's outputs here")] = None,
    config: ConfigOpt = None,
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name on that server")] = None,
    local_model: Annotated[str | None, typer.Option(help="Embedded GGUF: default, small or a path")] = None,
    embed_model: Annotated[str | None, typer.Option(help="sentence-transformers model name or path")] = None,
) -> None:
    """Build a taxonomy for a labelled data set and score it (NMI, ARI, ACC, purity, macro-F1) against baselines;
    with --open-set, score how routing tells unseen classes from known ones."""
    from clado.eval.confusion_png import render_confusion_png
    from clado.eval.evaluate import evaluate, format_report
    from clado.eval.open_set import evaluate_open_set, format_open_set

    cfg = load_config(
        config,
        **{"llm.base_url": llm_url, "llm.model": llm_model, "llm.local_model": local_model, "embed.model": embed_model},
        seed=seed,
    )
    if open_set:
        report = evaluate_open_set(
            dataset, labels=labels, split=split, ood_split=ood_split, known_share=known_share, sample=sample,
            seed=seed, no_llm=no_llm, config=cfg,
        )  # fmt: skip
        print(format_open_set(report))
    else:
        report = evaluate(
            dataset, labels=labels, parent_field=parent_field, text_field=text_field, messages_field=messages_field,
            split=split, sample=sample, seed=seed, no_llm=no_llm, config=cfg, out=out,
        )  # fmt: skip
        print(format_report(report))
        if confusion:
            title = (
                f"{report['dataset']} {report['split'] or ''} leaves (macro-F1 {100 * report['leaf']['macro_f1']:.1f})"
            )
            render_confusion_png(report["leaf_classes"]["confusion"], confusion, title=title)
            console.print(f"wrote {confusion}")
    if json_path:
        json_path.write_text(json.dumps(report, indent=1, default=str))
        console.print(f"wrote {json_path}")
