"""`clado eval`: build a taxonomy for a labelled data set (gold labels hidden from the build) and score it."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from clado.backends.embed import Embedder, make_embedder
from clado.backends.llm_runtime import llm_client
from clado.config import Config
from clado.eval.baselines import run_baselines
from clado.eval.datasets import LabelledSet, load_labelled
from clado.eval.metrics import per_class_scores, score_labels, tree_consistency
from clado.pipeline.build import BuildResult, build_async, keyword_parent_name
from clado.pipeline.hierarchy_baseline import scipy_hierarchy
from clado.taxonomy.records import Record, Taxonomy
from clado.taxonomy.store import Store

UNASSIGNED = -1


def record_predictions(result: BuildResult, record_ids: list[str]) -> tuple[list[Any], list[Any], np.ndarray]:
    """Per record: leaf node id, top node id (or -1 when unassigned) and the vector of its first item."""
    taxonomy = result.taxonomy
    leaf_of = taxonomy.leaf_of()
    top_level = taxonomy.depth - 1
    first_item: dict[str, int] = {}
    for i, item_id in enumerate(result.items):
        first_item.setdefault(result.items[item_id].record_id, i)
    item_ids = list(result.items)
    leaf, top, rows = [], [], []
    for record_id in record_ids:
        row = first_item.get(record_id)
        node = leaf_of.get(item_ids[row]) if row is not None else None
        leaf.append(node if node is not None else UNASSIGNED)
        top.append(taxonomy.ancestor_at(node, top_level).id if node is not None else UNASSIGNED)
        rows.append(row if row is not None else -1)
    dim = result.vectors.shape[1]
    vectors = np.stack([result.vectors[r] if r >= 0 else np.zeros(dim, np.float32) for r in rows])
    return leaf, top, vectors


def score_predictions(leaf: list[Any], top: list[Any], data: LabelledSet) -> dict[str, Any]:
    """Leaf and top-level metrics (and tree consistency) of per-record predictions against the gold labels."""
    classes = per_class_scores(leaf, data.gold, noise=UNASSIGNED)
    leaf_scores = score_labels(leaf, data.gold, noise=UNASSIGNED) | {"macro_f1": classes.pop("macro_f1")}
    scores: dict[str, Any] = {"leaf": leaf_scores, "top": None, "leaf_classes": classes}
    if data.gold_parent is not None:
        scores["top"] = score_labels(top, data.gold_parent, noise=UNASSIGNED)
        scores["top"]["tree_consistency"] = tree_consistency(top, data.gold, noise=UNASSIGNED)
    return scores


def top_nodes(top: list[Any], taxonomy: Taxonomy, data: LabelledSet) -> list[dict[str, Any]]:
    """Per top node, largest first: its name, its records and the gold parent (else label) most of them carry."""
    gold = data.gold_parent or data.gold
    by_node: dict[Any, Counter] = {}
    for node, label in zip(top, gold):
        if node != UNASSIGNED:
            by_node.setdefault(node, Counter())[label] += 1
    names = taxonomy.by_id()
    rows = []
    for node, counts in by_node.items():
        label, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        size = sum(counts.values())
        rows.append(
            {"name": names[node].name, "records": size, "main_gold": label, "main_gold_share": round(n / size, 3)}
        )
    return sorted(rows, key=lambda r: (-r["records"], r["name"]))


def scipy_tree(result: BuildResult, config: Config) -> BuildResult:
    """The same build with its hierarchy replaced by the embedding-only one (Ward on the leaves' centroids)."""
    row = {item_id: i for i, item_id in enumerate(result.items)}
    leaves = result.taxonomy.leaves()
    centroids = np.stack([result.vectors[[row[m] for m in leaf.member_ids]].mean(axis=0) for leaf in leaves])
    nodes = scipy_hierarchy(leaves, centroids, settings=config.hierarchy, name_fn=keyword_parent_name)
    return dataclasses.replace(result, taxonomy=result.taxonomy.model_copy(update={"nodes": nodes}))


def build_records(
    records: list[Record], *, config: Config, embedder: Embedder, no_llm: bool, out: Path | None
) -> BuildResult:
    """A build of `records` into `out` (a temporary directory when None, deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="clado-eval-") as scratch:
        out_dir = out or Path(scratch)

        async def run() -> BuildResult:
            with Store(out_dir / "clado.db") as store:
                common: dict[str, Any] = {
                    "out": out_dir,
                    "config": config,
                    "store": store,
                    "embedder": embedder,
                    "records": records,
                }
                if no_llm:
                    return await build_async([], llm=None, no_llm=True, **common)
                async with llm_client(config.llm, seed=config.seed, store=store) as llm:
                    return await build_async([], llm=llm, **common)

        return asyncio.run(run())


def evaluate(
    dataset: Path,
    *,
    labels: str,
    parent_field: str | None = None,
    text_field: str | None = "text",
    messages_field: str | None = None,
    split: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    no_llm: bool = False,
    config: Config | None = None,
    out: Path | None = None,
    baselines: bool = True,
) -> dict[str, Any]:
    """Build on the data set's records and return the report dict (the `--json` layout)."""
    config = (config or Config()).model_copy(deep=True)
    if config.facets.set == "auto" and not config.facets.custom:
        config.facets.set = "conversations" if messages_field else "support"
    if out is None:
        config.output.map = False  # the 2-D map is for people reading the outputs, which are not kept
    start = time.perf_counter()
    data = load_labelled(
        dataset, labels=labels, parent_field=parent_field, text_field=None if messages_field else text_field,
        messages_field=messages_field, split=split, sample=sample, seed=seed,
    )  # fmt: skip
    load_seconds = time.perf_counter() - start
    result = build_records(data.records, config=config, embedder=make_embedder(config.embed), no_llm=no_llm, out=out)
    record_ids = [r.id for r in data.records]
    leaf, top, vectors = record_predictions(result, record_ids)
    report: dict[str, Any] = {
        "dataset": data.name,
        "split": split,
        "n": len(data.records),
        "mode": "no-llm" if no_llm else "full",
        "models": result.taxonomy.fingerprint,
        **score_predictions(leaf, top, data),
        "top_nodes": top_nodes(top, result.taxonomy, data),
        "baselines": {},
        "top_baselines": {},
        "seconds": {"load": round(load_seconds, 3), **result.summary["seconds"]},
        "summary": {
            k: result.summary[k]
            for k in ("items", "clusters", "unassigned", "cluster_method", "refine", "events", "llm")
        },
    }
    if report["top"] is not None and not no_llm and result.taxonomy.leaves():
        ward_leaf, ward_top, _ = record_predictions(scipy_tree(result, config), record_ids)
        report["top_baselines"]["scipy_ward"] = score_predictions(ward_leaf, ward_top, data)["top"]
    if baselines:
        start = time.perf_counter()
        report["baselines"] = run_baselines(vectors, data.gold, seed=seed)
        report["seconds"]["baselines"] = round(time.perf_counter() - start, 3)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The metrics as a plain table (percentages for the scores)."""
    rows = [("clado leaf", report["leaf"])]
    if report["top"] is not None:
        rows.append(("clado top", report["top"]))
    rows += [(f"{name} top", scores) for name, scores in report.get("top_baselines", {}).items()]
    rows += [(name, scores) for name, scores in report["baselines"].items()]
    header = (
        f"{'':<18}{'NMI':>7}{'ARI':>7}{'ACC':>7}{'purity':>8}{'clusters':>10}{'gold':>6}{'unassigned':>12}{'F1':>7}"
    )
    lines = [f"{report['dataset']} ({report['split'] or 'all'}, n={report['n']}, mode={report['mode']})", header]
    for name, s in rows:
        lines.append(
            f"{name:<18}{100 * s['nmi']:>7.1f}{100 * s['ari']:>7.1f}{100 * s['acc']:>7.1f}{100 * s['purity']:>8.1f}"
            f"{s['n_clusters']:>10}{s['n_gold']:>6}{100 * s['unassigned_share']:>11.1f}%"
            + (f"{100 * s['macro_f1']:>7.1f}" if "macro_f1" in s else "")
        )
    for name, top in [("clado", report["top"]), *report.get("top_baselines", {}).items()]:
        if top is not None:
            lines.append(f"{name} tree consistency: {100 * top['tree_consistency']:.1f}%")
    for node in report.get("top_nodes", []):
        lines.append(
            f"top node {node['name']!r}: {node['records']} records, {100 * node['main_gold_share']:.0f}% {node['main_gold']}"
        )
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    return "\n".join(lines)
