"""The build: ingest → facets → embeddings → clusters → names → hierarchy → exports, each stage cached in the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from clado.agents.facets import FACET_SETS, ExtractResult, extract_facets
from clado.agents.hierarchy import build_hierarchy
from clado.agents.judge import make_judge
from clado.agents.namer import name_clusters
from clado.backends.embed import Embedder, cached_vectors, embed_cached, make_embedder
from clado.backends.idf_pooling import IdfPooledEmbedder, fitted_item_embedder, token_stats_digest
from clado.backends.llm import LLMClient
from clado.backends.llm_runtime import llm_client
from clado.config import Config
from clado.pipeline.aspects import aspect_mixed_vectors, canonical_aspects, cluster_items
from clado.pipeline.build_cache import (
    BUILD_STAGE,
    build_key,
    cached_clustering,
    cluster_key,
    output_digests,
    outputs_unchanged,
    put_clustering,
)
from clado.pipeline.cluster import items_token_matcher, items_token_matcher_wanted
from clado.pipeline.failures import settle_failures
from clado.pipeline.hierarchy_baseline import scipy_hierarchy
from clado.pipeline.ingest import ingest
from clado.pipeline.keywords import ctfidf_keywords, keyword_name
from clado.pipeline.refine import refine_clusters
from clado.pipeline.route import calibrated, member_probabilities
from clado.prompts import set_override_dir
from clado.taxonomy.counts import with_occurrence_sizes
from clado.taxonomy.export import write_outputs
from clado.taxonomy.lock import StoreBusy, store_lock
from clado.taxonomy.records import FacetSpec, FacetValue, Item, Node, Record, Taxonomy
from clado.taxonomy.staging import staged_files
from clado.taxonomy.store import Store
from clado.version import __version__

log = logging.getLogger(__name__)


@dataclass
class StageTimer:
    """Wall time per stage, in seconds, and with `llm` the LLM requests each stage sent (cache hits not counted)."""

    seconds: dict[str, float] = field(default_factory=dict)
    llm: LLMClient | None = None
    llm_calls: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        calls = self.llm.stats.calls if self.llm is not None else 0
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
            if self.llm is not None and self.llm.stats.calls > calls:
                self.llm_calls[name] = self.llm_calls.get(name, 0) + self.llm.stats.calls - calls


@dataclass
class BuildResult:
    taxonomy: Taxonomy
    items: dict[str, Item]
    vectors: np.ndarray
    outputs: dict[str, Path]
    summary: dict


def choose_facets(config: Config, records: list[Record]) -> list[FacetSpec]:
    """The configured facets, or the built-in set that fits the records."""
    if config.facets.custom:
        return config.facets.custom
    name = config.facets.set
    if name == "auto":
        name = "conversations" if any(r.messages for r in records) else "reviews"
    return FACET_SETS[name]


RAW_FACET = "text"


def extracts_facets(config: Config, *, no_llm: bool) -> bool:
    """Whether records go through facet extraction (not with --no-llm, nor with the `raw` facet set)."""
    return not no_llm and (bool(config.facets.custom) or config.facets.set != "raw")


def raw_items(records: list[Record]) -> list[FacetValue]:
    """One item per record with its raw text (the --no-llm path and the `raw` facet set)."""
    return [FacetValue(record_id=r.id, facet=RAW_FACET, value={}, text=r.as_text()) for r in records]


def make_items(values: list[FacetValue], records: dict[str, Record]) -> dict[str, Item]:
    """Export-ready items: the clustered text plus the record's facet values and metadata."""
    items = {}
    for v in values:
        record = records[v.record_id]
        facets = {k: val for k, val in v.value.items() if not isinstance(val, (dict, list))}
        items[v.item_id] = Item(
            id=v.item_id,
            record_id=v.record_id,
            text=record.as_text()[:2000],
            source=f"{record.source_file}:{record.source_line}",
            created_at=record.created_at,
            user_id=record.user_id,
            facets=facets,
            repeats=record.repeats,
        )
    return items


def leaf_nodes(
    item_ids: list[str],
    labels: np.ndarray,
    names: dict[int, tuple[str, str]],
    keywords: dict[int, list[str]],
    medoids: dict[int, int],
) -> list[Node]:
    """Leaf nodes with identities derived from their members, never from the algorithm's label numbers."""
    leaves = []
    for label in sorted(set(labels.tolist()) - {-1}):
        members = [item_ids[i] for i in np.flatnonzero(labels == label)]
        name, description = names[label]
        leaves.append(
            Node(
                id=Node.make_id(0, members),
                level=0,
                name=name,
                description=description,
                size=len(members),
                member_ids=members,
                keywords=keywords.get(label, []),
                medoid_id=item_ids[medoids[label]] if label in medoids else None,
            )
        )
    return leaves


def keyword_names(keywords: dict[int, list[str]]) -> dict[int, tuple[str, str]]:
    return {label: (keyword_name(words), "Keywords: " + ", ".join(words)) for label, words in keywords.items()}


def keyword_parent_name(children: list[Node]) -> tuple[str, str]:
    """A name for a parent built without an LLM: the most common keywords of its children."""
    counts = Counter(w for child in children for w in child.keywords[:5])
    words = [w for w, _ in counts.most_common(4)] or [children[0].name]
    return keyword_name(words), "Groups: " + "; ".join(c.name for c in children[:6])


async def build_async(
    inputs: list[Path],
    *,
    out: Path,
    config: Config,
    store: Store,
    embedder: Embedder | None,
    llm: LLMClient | None,
    no_llm: bool = False,
    retry_failed: bool = False,
    records: list[Record] | None = None,
) -> BuildResult:
    """Run every stage; `llm` may be None only with `no_llm`. `records` bypasses ingest (evaluation).

    `embedder` None = the one `config.embed` names, loaded only when something needs embedding. A re-run with
    the same records and settings whose exports are untouched returns the stored taxonomy without re-running.
    """
    timer = StageTimer(llm=None if no_llm else llm)
    events: Counter = Counter()
    run_id = store.start_run("build", config.stored())
    try:
        with timer.stage("ingest"):
            ingested = None
            if records is None:
                ingested = ingest(inputs, settings=config.ingest)
                records = ingested.records
            store.put_records(records)
        key = build_key(records, config_fingerprint=config.fingerprint(), no_llm=no_llm, retry_failed=retry_failed)
        hit = await _cached_build(key, records, config=config, store=store, llm=llm, no_llm=no_llm, timer=timer)
        if hit is not None:
            store.finish_run(run_id, "ok", hit.summary)
            return hit
        result = await _run_stages(
            records, ingested, config=config, store=store, embedder=embedder, llm=llm, no_llm=no_llm,
            retry_failed=retry_failed, timer=timer, events=events, out=out, run_id=run_id,
        )  # fmt: skip
        result.taxonomy.version = store.next_version()
        with staged_files(out) as staged:  # the exports replace the old ones only once the store has committed
            with timer.stage("export"):
                conversations = any(r.messages for r in records)
                result.outputs = write_outputs(
                    result.taxonomy, result.items, result.vectors, staged=staged, config=config,
                    conversations=conversations,
                    confidence=member_probabilities(result.taxonomy, list(result.items), result.vectors),
                )  # fmt: skip
            result.summary["seconds"] = timer.seconds
            version = store.put_taxonomy(result.taxonomy, run_id)
        if not result.summary["transient_errors"]:  # else the next build asks those records again
            store.put_output(key, BUILD_STAGE, {"version": version, "outputs": output_digests(result.outputs)})
        store.finish_run(run_id, "ok", result.summary)
        return result
    except BaseException as exc:
        store.finish_run(run_id, f"failed: {type(exc).__name__}", {"error": str(exc), "seconds": timer.seconds})
        raise


async def _item_values(
    records: list[Record], *, config: Config, store: Store, llm: LLMClient | None, no_llm: bool, retry_failed: bool,
    events: Counter,
) -> ExtractResult:  # fmt: skip
    """The clustered facet values of the records (their raw texts without extraction), the extraction errors and
    how many records were cut to the prompt budget."""
    if llm is None or not extracts_facets(config, no_llm=no_llm):
        return ExtractResult(values=raw_items(records))
    facets = choose_facets(config, records)
    max_chars = max(500, (config.llm.n_ctx - config.llm.max_tokens - 400) * 3)
    extracted = await extract_facets(
        records, llm=llm, facets=facets, store=store, max_input_chars=max_chars, events=events,
        retry_failed=retry_failed,
    )  # fmt: skip
    clustered = {f.name for f in facets if f.cluster_on}
    values = [v for v in extracted.values if v.facet in clustered]
    # Records cut to the prompt budget, each once: not again when already cut at ingest, nor only when asked anew.
    truncated = sum(len(r.as_text()) > max_chars and "truncated_from_chars" not in r.metadata for r in records)
    return extracted.model_copy(update={"values": values, "truncated": truncated})


async def _cached_build(
    key: str, records: list[Record], *, config: Config, store: Store, llm: LLMClient | None, no_llm: bool,
    timer: StageTimer,
) -> BuildResult | None:  # fmt: skip
    """The stored result of an identical earlier build whose exports are untouched, else None."""
    hit = store.get_output(key)
    if hit is None or not outputs_unchanged(hit["outputs"]):
        return None
    taxonomy = store.taxonomy(hit["version"])
    if taxonomy is None:
        return None
    with timer.stage("cached"):
        values = (
            await _item_values(
                records, config=config, store=store, llm=llm, no_llm=no_llm, retry_failed=False, events=Counter()
            )
        ).values
        X = cached_vectors([v.text for v in values], model_id=taxonomy.fingerprint["embed_model"], cache=store)
        if X is None:
            return None
    items = make_items(values, {r.id: r for r in records})
    outputs = {Path(p).name: Path(p) for p in hit["outputs"]}
    summary = taxonomy.summary | {"cached": True, "seconds": timer.seconds}
    return BuildResult(taxonomy=taxonomy, items=items, vectors=X, outputs=outputs, summary=summary)


async def _clustering(
    Xc: np.ndarray, buckets, texts: list[str], *, config: Config, store: Store, item_embedder: Embedder,
    llm: LLMClient | None, no_llm: bool, timer: StageTimer,
) -> tuple[np.ndarray, dict[int, int], str, dict]:  # fmt: skip
    """Refined labels, medoid rows, the method and the refinement stats; cached by texts and settings."""
    judge_llm = None if no_llm else llm
    settings = {
        "seed": config.seed,
        **{section: getattr(config, section).model_dump(mode="json") for section in ("cluster", "aspects", "embed")},
    }
    key = cluster_key(
        texts, embed_model=item_embedder.model_id, settings=settings,
        llm_model=judge_llm.model if judge_llm is not None and config.cluster.rerank.reranker == "llm_judge" else None,
    )  # fmt: skip
    cached = cached_clustering(store, key)
    if cached is not None:
        labels, medoids, stats = cached
        return labels, medoids, stats["method"], stats["refine"]
    judge = make_judge(config.cluster.rerank, texts, llm=judge_llm)
    with timer.stage("cluster"):  # worker threads: a judge sends its LLM calls to this loop
        tokens = await asyncio.to_thread(items_token_matcher, item_embedder, texts, config.cluster)
        clustered = await asyncio.to_thread(
            cluster_items, Xc, buckets, settings=config.cluster, aspects=config.aspects, seed=config.seed, judge=judge,
            texts=texts, tokens=tokens,
        )  # fmt: skip
        del tokens
    with timer.stage("refine"):
        refined = await asyncio.to_thread(
            refine_clusters, Xc, clustered.labels, settings=config.cluster.refine, judge=judge
        )
    put_clustering(store, key, refined.labels, refined.medoids, {"method": clustered.method, "refine": refined.stats})
    return refined.labels, refined.medoids, clustered.method, refined.stats


async def _run_stages(
    records: list[Record], ingested, *, config: Config, store: Store, embedder: Embedder | None,
    llm: LLMClient | None, no_llm: bool, retry_failed: bool, timer: StageTimer, events: Counter, out: Path,
    run_id: str,
) -> BuildResult:  # fmt: skip
    """Extraction, embedding, clustering, naming and hierarchy of a build that is not cached (the caller exports).
    Extraction errors go to `out/errors.json`; too many of them stop the build there (ExtractionFailed), before
    `embedder` (None: the configured one) is loaded."""
    by_id = {r.id: r for r in records}
    with timer.stage("extract"):
        extracted = await _item_values(
            records, config=config, store=store, llm=llm, no_llm=no_llm, retry_failed=retry_failed, events=events
        )
    settle_failures(extracted, records, out=out, run_id=run_id, max_share=config.facets.max_failed_share)
    embedder = embedder or make_embedder(config.embed)
    values = extracted.values
    items = make_items(values, by_id)
    item_ids = [v.item_id for v in values]
    texts = [v.text for v in values]
    with timer.stage("embed"):
        item_embedder = fitted_item_embedder(embedder, config.embed, store, texts)
        if isinstance(item_embedder, IdfPooledEmbedder) and items_token_matcher_wanted(len(texts), config.cluster):
            item_embedder.keep_tokens(config.cluster.graph.token_match_max_tokens)  # token matching reuses this pass
        X = embed_cached(texts, embedder=item_embedder, cache=store)
        aspects = [v.aspect for v in values]
        buckets = canonical_aspects(aspects, embedder=embedder, cache=store, threshold=config.aspects.aspect_threshold)
        Xc = aspect_mixed_vectors(X, buckets, settings=config.embed) if config.embed.mix_aspect else X
    labels, medoids, method, refine_stats = await _clustering(
        Xc, buckets, texts, config=config, store=store, item_embedder=item_embedder, llm=llm, no_llm=no_llm,
        timer=timer,
    )  # fmt: skip
    if isinstance(item_embedder, IdfPooledEmbedder):
        item_embedder.kept_tokens = None
    with timer.stage("keywords"):
        keywords = ctfidf_keywords(texts, labels)
    with timer.stage("name"):
        names = keyword_names(keywords)
        if llm is not None and not no_llm:
            named = await name_clusters(
                texts, X, labels, medoids, llm=llm, settings=config.naming, events=events, seed=config.seed,
                fallback_names={k: v[0] for k, v in names.items()}, embedder=embedder,
            )  # fmt: skip
            names = {label: (n.name, n.description) for label, n in named.items()}
    leaves = leaf_nodes(item_ids, labels, names, keywords, medoids)
    with timer.stage("hierarchy"):
        centroids = leaf_centroids(X, labels)
        if llm is not None and not no_llm:
            nodes = await build_hierarchy(
                leaves,
                llm=llm,
                embedder=embedder,
                settings=config.hierarchy,
                events=events,
                seed=config.seed,
                centroids=centroids,
            )
        else:
            nodes = scipy_hierarchy(leaves, centroids, settings=config.hierarchy, name_fn=keyword_parent_name)
    unassigned = [item_ids[i] for i in np.flatnonzero(labels == -1)]
    summary = {
        "clado_version": __version__,
        "records": len(records),
        "inputs": ingested.inputs if ingested else len(records),
        "duplicates": ingested.duplicates if ingested else 0,
        "skipped": [s.model_dump() for s in ingested.skipped] if ingested else [],
        "truncated_input": (ingested.truncated if ingested else 0) + extracted.truncated,
        "items": len(item_ids),
        "unassigned": len(unassigned),
        "extraction_errors": extracted.errors,
        "transient_errors": len(extracted.transient),
        "clusters": len(leaves),
        "cluster_method": method,
        "refine": refine_stats,
        "events": dict(events),
        "llm": llm.stats.as_dict() if llm is not None else None,
        "llm_calls_by_stage": timer.llm_calls,
    }
    taxonomy = Taxonomy(
        created_at=datetime.now(UTC),
        fingerprint={
            "config": config.fingerprint(),
            "llm_model": None if no_llm or llm is None else llm.model,
            "embed_model": item_embedder.model_id,
            "token_stats": token_stats_digest(item_embedder),
            "clado": __version__,
        },
        nodes=nodes,
        unassigned_ids=unassigned,
        summary=summary,
    )
    taxonomy = with_occurrence_sizes(taxonomy, items)  # sizes count every input row, not only distinct texts
    with timer.stage("calibrate"):
        taxonomy = calibrated(taxonomy, item_ids, X, settings=config.routing, seed=config.seed)
    return BuildResult(taxonomy=taxonomy, items=items, vectors=X, outputs={}, summary=summary)


def leaf_centroids(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean item vector of each leaf, in label order (one pass over the items)."""
    k = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    if k == 0:
        return np.zeros((0, X.shape[1]))
    ok = labels >= 0
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[ok], X[ok])
    return sums / np.bincount(labels[ok], minlength=k)[:, None]


def build(
    inputs: Sequence[Path | str] | Path | str,
    *,
    out: Path | str = "out",
    config: Config | None = None,
    no_llm: bool = False,
    retry_failed: bool = False,
    wait: float = 0.0,
) -> BuildResult:
    """Build a taxonomy from input files into `out` (clado.db, taxonomy.json/html, report.md, assignments.csv).

    One writer per store: a concurrent build of the same `out` waits up to `wait` seconds, then raises StoreBusy.
    """
    config = config or Config()
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_override_dir(config.prompts_dir)
    embedder = None  # loaded by the build only when something needs embedding

    async def run() -> BuildResult:
        with store_lock(out / "clado.db", wait=wait), Store(out / "clado.db") as store:
            if no_llm:
                return await build_async(
                    paths, out=out, config=config, store=store, embedder=embedder, llm=None, no_llm=True
                )
            async with llm_client(config.llm, seed=config.seed, store=store) as llm:
                return await build_async(
                    paths, out=out, config=config, store=store, embedder=embedder, llm=llm, retry_failed=retry_failed
                )

    if wait:
        try:
            with store_lock(out / "clado.db", wait=0):
                pass
        except StoreBusy:
            limit = "no time limit" if wait < 0 else f"up to {wait:g} s"
            log.warning("%s is being written by another clado process; waiting for it (%s)", out / "clado.db", limit)
    return asyncio.run(run())
