"""Periodic refresh: add new records to an existing taxonomy without moving what is there, or rebuild with stable IDs.

Incremental refresh: records already in the store (same content hash) are skipped, so they cost no LLM call;
new records are extracted and embedded; a new item joins the leaf `route` finds most probable unless it is a new
problem there (probability below the taxonomy's calibrated τ, or a cosine below `assign_threshold` when set);
the rest (with the items left unassigned before) form a pool that is clustered like a build. Pool clusters of at least `min_new_cluster_size` that contain a new item become new leaves,
named by the namer and attached under the existing parent whose "name: description" embedding is nearest;
a pool cluster nearly identical to an existing leaf (centroid cosine >= duplicate threshold) joins that leaf.
Existing nodes keep their IDs, names and members; sizes grow up the tree.

Rebuild (`rebuild=True`): a full build over every record, then each level's new nodes take the IDs of the
old nodes they overlap most (Hungarian matching on member Jaccard, at least `id_match_jaccard`).

Both replay the analyst edits, re-fit the routing calibration on the new tree, write a new taxonomy version, the
exports and diff.json / diff.md.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from clado.agents.facets import extract_facets
from clado.agents.labels import make_unique
from clado.agents.namer import name_clusters
from clado.backends.embed import Embedder, embed_cached, make_embedder
from clado.backends.idf_pooling import stored_item_embedder
from clado.backends.llm import LLMClient
from clado.backends.llm_runtime import llm_client
from clado.config import Config
from clado.pipeline.build import (
    RAW_FACET,
    StageTimer,
    build_async,
    choose_facets,
    extracts_facets,
    keyword_names,
    make_items,
    raw_items,
)
from clado.pipeline.cluster import canonical_labels, cluster_vectors, items_token_matcher
from clado.pipeline.failures import settle_failures
from clado.pipeline.ingest import ingest, occurrence_of
from clado.pipeline.keywords import ctfidf_keywords
from clado.pipeline.refine import medoid_rows, refine_clusters
from clado.pipeline.refresh_settings import RefreshSettings
from clado.pipeline.route import calibrated, fit_calibration, member_centroids, member_probabilities, route
from clado.prompts import set_override_dir
from clado.taxonomy.counts import with_occurrence_sizes
from clado.taxonomy.diff import TaxonomyDiff, diff_taxonomies, write_diff
from clado.taxonomy.edits import apply_edit, locked_ids, make_edit, recompute_members, replay_edits
from clado.taxonomy.export import write_outputs
from clado.taxonomy.lock import store_lock
from clado.taxonomy.records import FacetValue, Item, Node, Record, Taxonomy
from clado.taxonomy.staging import staged_files
from clado.taxonomy.store import Store
from clado.vectors import unit
from clado.version import __version__


class RefreshError(ValueError):
    """A refresh that cannot run: no taxonomy in the store, another embedder, stored items missing."""


def stored_config(store: Store) -> Config:
    """The config recorded with the store's latest successful run (defaults when there is none)."""
    data = store.latest_config()
    return Config() if data is None else Config.from_stored(data)


class LazyLLM:
    """Opens the LLM client on first use, so a refresh with nothing to extract or name starts no model server."""

    def __init__(self, open_client: Callable[[], AbstractAsyncContextManager[LLMClient]]):
        self._open = open_client
        self._stack = AsyncExitStack()
        self.client: LLMClient | None = None

    async def get(self) -> LLMClient:
        if self.client is None:
            self.client = await self._stack.enter_async_context(self._open())
        return self.client

    async def aclose(self) -> None:
        await self._stack.aclose()

    def stats(self) -> dict[str, int] | None:
        return self.client.stats.as_dict() if self.client is not None else None


@dataclass
class ItemSet:
    """Clustered items in one order: their facet values, export items and embedding rows."""

    values: list[FacetValue]
    items: dict[str, Item]
    vectors: np.ndarray

    def rows(self) -> dict[str, int]:
        return {v.item_id: i for i, v in enumerate(self.values)}


@dataclass
class RefreshResult:
    taxonomy: Taxonomy
    diff: TaxonomyDiff | None
    outputs: dict[str, Path]
    summary: dict[str, Any]


def split_new(records: list[Record], known: dict[str, str]) -> tuple[list[Record], int]:
    """(records whose content is not in the store, how many were known); a new record reusing a stored
    id for other content gets the id `<id>@<hash prefix>`."""
    hashes = set(known.values())
    new = []
    for record in records:
        if record.content_hash in hashes:
            continue
        if record.id in known:
            record = record.model_copy(update={"id": f"{record.id}@{record.content_hash[:12]}"})
        new.append(record)
    return new, len(records) - len(new)


def merge_repeats(records: list[Record], stored: list[Record]) -> tuple[list[Record], int]:
    """Stored records that gain occurrences from `records` of the same content (occurrences whose id they
    do not hold yet, so feeding a file twice counts it once), and how many occurrences they gain."""
    by_hash = {r.content_hash: r for r in stored}
    updated: dict[str, Record] = {}
    for record in records:
        kept = by_hash.get(record.content_hash)
        if kept is None:
            continue
        seen = {kept.id, *(o.id for o in kept.repeats)}
        fresh = [o for o in [occurrence_of(record), *record.repeats] if o.id not in seen]
        if fresh:
            kept = kept.model_copy(update={"repeats": kept.repeats + fresh})
            by_hash[kept.content_hash] = updated[kept.id] = kept
    before = {r.id: len(r.repeats) for r in stored}
    return list(updated.values()), sum(len(r.repeats) - before[r.id] for r in updated.values())


def item_values(store: Store, item_ids: list[str], records: dict[str, Record]) -> dict[str, FacetValue]:
    """Stored facet values of `item_ids` (`record#facet#index`); raw-text items are the records' own texts."""
    by_facet: dict[str, list[str]] = {}
    for item_id in item_ids:
        record_id, facet, _ = item_id.rsplit("#", 2)
        by_facet.setdefault(facet, []).append(record_id)
    found: dict[str, FacetValue] = {}
    for facet, record_ids in by_facet.items():
        if facet == RAW_FACET:
            values = raw_items([records[r] for r in dict.fromkeys(record_ids) if r in records])
        else:
            stored = store.facets(facet)
            values = [v for r in dict.fromkeys(record_ids) for v in (stored[r][1] or [] if r in stored else [])]
        found.update((v.item_id, v) for v in values)
    return {i: found[i] for i in item_ids if i in found}


def taxonomy_items(store: Store, taxonomy: Taxonomy, *, embedder: Embedder, records: dict[str, Record]) -> ItemSet:
    """Every item of `taxonomy` (leaf members and unassigned) in record order, with cached embeddings."""
    ids = [m for leaf in taxonomy.leaves() for m in leaf.member_ids] + list(taxonomy.unassigned_ids)
    values = item_values(store, ids, records)
    missing = [i for i in ids if i not in values]
    if missing:
        raise RefreshError(
            f"{len(missing)} items of taxonomy version {taxonomy.version} have no stored facet values "
            f"(first: {missing[0]}); run `clado refresh --rebuild`"
        )
    order = {r: i for i, r in enumerate(records)}
    ordered = sorted(values.values(), key=lambda v: (order.get(v.record_id, len(order)), v.facet, v.index))
    X = embed_cached([v.text for v in ordered], embedder=embedder, cache=store)
    return ItemSet(values=ordered, items=make_items(ordered, records), vectors=X.reshape(len(ordered), -1))


def map_stable_ids(old: Taxonomy, new: Taxonomy, *, min_jaccard: float) -> Taxonomy:
    """`new` with each node renamed to the ID of the old node of its level it matches (Hungarian on member
    Jaccard, pairs below `min_jaccard` left unmatched); unmatched nodes keep their membership-derived IDs."""
    renamed: dict[str, str] = {}
    for level in sorted({n.level for n in new.nodes}):
        olds = [n for n in old.nodes if n.level == level]
        news = [n for n in new.nodes if n.level == level]
        if not olds or not news:
            continue
        J = jaccard_matrix([n.member_ids for n in news], [n.member_ids for n in olds])
        for r, c in zip(*linear_sum_assignment(J, maximize=True)):
            if J[r, c] >= min_jaccard:
                renamed[news[r].id] = olds[c].id

    def mapped(node_id: str | None) -> str | None:
        return renamed.get(node_id, node_id) if node_id is not None else None

    nodes = [n.model_copy(update={"id": mapped(n.id), "parent_id": mapped(n.parent_id)}) for n in new.nodes]
    return new.model_copy(update={"nodes": nodes})


def jaccard_matrix(a: list[list[str]], b: list[list[str]]) -> np.ndarray:
    """Jaccard index of every set in `a` with every set in `b` (sparse incidence products)."""
    vocabulary = {m: i for i, m in enumerate(dict.fromkeys(m for group in a + b for m in group))}

    def incidence(groups: list[list[str]]) -> sparse.csr_matrix:
        rows = [k for k, g in enumerate(groups) for _ in set(g)]
        cols = [vocabulary[m] for g in groups for m in set(g)]
        return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(groups), len(vocabulary)))

    A, B = incidence(a), incidence(b)
    inter = (A @ B.T).toarray()
    sizes_a, sizes_b = np.asarray(A.sum(axis=1)), np.asarray(B.sum(axis=1)).T
    union = sizes_a + sizes_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def with_trends(taxonomy: Taxonomy, store: Store, *, version: int) -> Taxonomy:
    """`taxonomy` with summary["trends"]: each node's size in every earlier build/refresh version and this one."""
    history = store.node_sizes()
    versions = [v["version"] for v in store.versions() if v["command"] != "edit"]
    sizes = {n.id: [history.get(v, {}).get(n.id, 0) for v in versions] + [n.size] for n in taxonomy.nodes}
    summary = taxonomy.summary | {"trends": {"versions": versions + [version], "sizes": sizes}}
    return taxonomy.model_copy(update={"summary": summary})


def max_input_chars(config: Config) -> int:
    """The facet extractor's input budget (the same formula as the build's)."""
    return max(500, (config.llm.n_ctx - config.llm.max_tokens - 400) * 3)


@dataclass
class _Context:
    config: Config
    settings: RefreshSettings
    store: Store
    embedder: Embedder
    item_embedder: Embedder  # the taxonomy's item vectors (IDF pooling with its stored stats)
    llm: LazyLLM | None
    no_llm: bool
    timer: StageTimer
    events: Counter
    out: Path  # where errors.json goes
    run_id: str


async def refresh_async(
    inputs: list[Path],
    *,
    out: Path,
    config: Config,
    store: Store,
    embedder: Embedder,
    llm: LazyLLM | None,
    rebuild: bool = False,
    records: list[Record] | None = None,
) -> RefreshResult:
    """Refresh the store's latest taxonomy with the records of `inputs` (or `records`); see the module doc.

    Thresholds come from `config.refresh`. `llm` may be None only when the taxonomy was built with --no-llm. With no new record (and no rebuild)
    nothing is written and the summary says `changed: false`.
    """
    previous = store.taxonomy()
    if previous is None:
        raise RefreshError(f"{store.path} holds no taxonomy yet: run `clado build` first")
    no_llm = previous.fingerprint.get("llm_model") is None
    if not no_llm and llm is None:
        raise RefreshError("this taxonomy was built with an LLM: a refresh needs one too")
    item_embedder = stored_item_embedder(embedder, config.embed, store, previous.fingerprint)
    if not rebuild and previous.fingerprint.get("embed_model") != item_embedder.model_id:
        raise RefreshError(
            f"the taxonomy was embedded with {previous.fingerprint.get('embed_model')!r}, the config gives "
            f"{item_embedder.model_id!r}: use the same embedding settings or `clado refresh --rebuild`"
        )
    settings = config.refresh
    run_id = store.start_run("refresh", config.stored())
    ctx = _Context(config, settings, store, embedder, item_embedder, llm, no_llm, StageTimer(), Counter(), out, run_id)
    try:
        with ctx.timer.stage("ingest"):
            if records is None:
                records = ingest(inputs, settings=config.ingest).records if inputs else []
            new_records, known = split_new(records, store.record_hashes())
            stored = store.records()
            repeated, repeats = merge_repeats(records, stored)
        summary: dict[str, Any] = {
            "clado_version": __version__,
            "previous_version": previous.version,
            "rebuild": rebuild,
            "records_in": len(records),
            "records_known": known,
            "records_new": len(new_records),
            "repeats_new": repeats,
        }
        if not new_records and not repeated and not rebuild:
            summary |= {"changed": False, "version": previous.version, "llm": None, "seconds": ctx.timer.seconds}
            store.finish_run(run_id, "ok", summary)
            return RefreshResult(taxonomy=previous, diff=None, outputs={}, summary=summary)
        all_records = {r.id: r for r in stored + repeated + new_records}
        if rebuild:
            taxonomy, items, X, part = await _rebuild(previous, all_records, ctx)
        else:
            taxonomy, items, X, part = await _extend(previous, new_records, all_records, ctx)
        summary |= part
        with ctx.timer.stage("edits"):
            taxonomy, summary["edits"] = replay_edits(taxonomy, store.edits(), min_jaccard=settings.id_match_jaccard)
        taxonomy = with_occurrence_sizes(taxonomy, items)
        with ctx.timer.stage("calibrate"):
            taxonomy = calibrated(taxonomy, list(items), X, settings=config.routing, seed=config.seed)
        version = store.next_version()
        taxonomy = with_trends(taxonomy, store, version=version)
        taxonomy.version = version
        diff = diff_taxonomies(previous, taxonomy)
        summary |= {"changed": True, "version": version, "diff": diff.counts(), "llm": llm.stats() if llm else None}
        taxonomy.summary = taxonomy.summary | summary
        with staged_files(out) as staged:  # the exports replace the old ones only once the store has committed
            with ctx.timer.stage("export"):
                conversations = any(r.messages for r in all_records.values())
                outputs = write_outputs(
                    taxonomy, items, X, staged=staged, config=config, conversations=conversations,
                    confidence=member_probabilities(taxonomy, list(items), X),
                )  # fmt: skip
                outputs |= write_diff(diff, staged)
            summary["seconds"] = ctx.timer.seconds
            taxonomy.summary["seconds"] = ctx.timer.seconds
            failed = set(summary["extraction_errors"])  # not stored, so the next refresh tries them again
            store.put_records(repeated + [r for r in new_records if r.id not in failed])
            store.put_taxonomy(taxonomy, run_id)
        store.finish_run(run_id, "ok", summary)
        return RefreshResult(taxonomy=taxonomy, diff=diff, outputs=outputs, summary=summary)
    except BaseException as exc:
        store.finish_run(run_id, f"failed: {type(exc).__name__}", {"error": str(exc), "seconds": ctx.timer.seconds})
        raise


async def _extract(
    new_records: list[Record], all_records: dict[str, Record], ctx: _Context
) -> tuple[list[FacetValue], dict[str, str]]:
    """Clustered facet values of the new records only (and their extraction errors); more failed records than
    `facets.max_failed_share` of the new ones stop the refresh after writing errors.json (ExtractionFailed)."""
    if not extracts_facets(ctx.config, no_llm=ctx.no_llm):
        return raw_items(new_records), {}
    assert ctx.llm is not None
    facets = choose_facets(ctx.config, list(all_records.values()))
    extracted = await extract_facets(
        new_records, llm=await ctx.llm.get(), facets=facets, store=ctx.store,
        max_input_chars=max_input_chars(ctx.config), events=ctx.events,
    )  # fmt: skip
    settle_failures(
        extracted, new_records, out=ctx.out, run_id=ctx.run_id, max_share=ctx.config.facets.max_failed_share
    )
    clustered = {f.name for f in facets if f.cluster_on}
    return [v for v in extracted.values if v.facet in clustered], extracted.errors


async def _extend(
    previous: Taxonomy, new_records: list[Record], all_records: dict[str, Record], ctx: _Context
) -> tuple[Taxonomy, dict[str, Item], np.ndarray, dict[str, Any]]:
    """The incremental refresh: existing leaves take the new items that fit; the pool may form new leaves."""
    s = ctx.settings
    with ctx.timer.stage("load"):
        old = taxonomy_items(ctx.store, previous, embedder=ctx.item_embedder, records=all_records)
    with ctx.timer.stage("extract"):
        new_values, errors = await _extract(new_records, all_records, ctx)
    with ctx.timer.stage("embed"):
        X_new = embed_cached([v.text for v in new_values], embedder=ctx.item_embedder, cache=ctx.store)
        X_new = X_new.reshape(len(new_values), old.vectors.shape[1])
    values = old.values + new_values
    X = np.vstack([old.vectors, X_new]).astype(np.float32)
    rows = {v.item_id: i for i, v in enumerate(values)}
    leaves = previous.leaves()
    old_centroids = member_centroids(leaves, rows, X)

    with ctx.timer.stage("assign"):
        additions: dict[str, list[str]] = {}
        pooled_new: list[str] = []
        calibration = previous.calibration or fit_calibration(
            leaves, rows, X, settings=ctx.config.routing, seed=ctx.config.seed
        )
        routes = route(X_new, old_centroids, [leaf.id for leaf in leaves], calibration, min_cosine=s.assign_threshold)
        for v, r in zip(new_values, routes):
            if r.is_new:
                pooled_new.append(v.item_id)
            else:
                additions.setdefault(leaves[r.leaf].id, []).append(v.item_id)
        assigned_existing = sum(len(a) for a in additions.values())

    with ctx.timer.stage("pool"):
        pool = list(previous.unassigned_ids) + pooled_new
        new_leaves, joined, pool_stats = await _cluster_pool(
            pool, set(pooled_new), values, X, rows, leaves, additions, previous, ctx
        )
        for leaf_id, members in joined.items():
            additions.setdefault(leaf_id, []).extend(members)
        taken = {m for leaf in new_leaves for m in leaf.member_ids} | {m for ms in joined.values() for m in ms}
        unassigned = [m for m in pool if m not in taken]

    nodes = recompute_members(_grown(previous.nodes, additions) + new_leaves)
    new_centroids = member_centroids(_grown(leaves, additions), rows, X)
    drift = {
        leaf.id: round(float(1.0 - old_centroids[k] @ new_centroids[k]), 4)
        for k, leaf in enumerate(leaves)
        if leaf.id in additions
    }
    pool_share = len(pooled_new) / len(new_values) if new_values else 0.0
    drifted = sorted(i for i, d in drift.items() if d > s.max_centroid_drift)
    reasons = []
    if pool_share > s.rebuild_pool_share:
        reasons.append(f"{pool_share:.0%} of new items fit no existing leaf (more than {s.rebuild_pool_share:.0%})")
    if drifted:
        reasons.append(f"{len(drifted)} leaf centroids moved more than {s.max_centroid_drift}")
    taxonomy = Taxonomy(
        created_at=datetime.now(UTC),
        fingerprint=previous.fingerprint | {"config": ctx.config.fingerprint(), "clado": __version__},
        nodes=nodes,
        unassigned_ids=unassigned,
    )
    part = {
        "items_new": len(new_values),
        "assigned_existing": assigned_existing,
        "pooled_new": len(pooled_new),
        "pool_share": round(pool_share, 4),
        "new_clusters": len(new_leaves),
        "joined_existing": sum(len(m) for m in joined.values()),
        "pool": pool_stats,
        "items": len({m for n in nodes if n.level == 0 for m in n.member_ids}) + len(unassigned),
        "unassigned": len(unassigned),
        "extraction_errors": errors,
        "max_centroid_drift": max(drift.values(), default=0.0),
        "drifted_leaves": drifted,
        "rebuild_recommended": bool(reasons),
        "rebuild_reasons": reasons,
        "events": dict(ctx.events),
    }
    items = old.items | make_items(new_values, all_records)
    return taxonomy, items, X, part


def _grown(nodes: list[Node], additions: dict[str, list[str]]) -> list[Node]:
    """`nodes` with the items in `additions` (node id → item ids) appended to their members."""
    return [
        n.model_copy(update={"member_ids": n.member_ids + additions[n.id]}) if n.id in additions else n for n in nodes
    ]


async def _cluster_pool(
    pool: list[str],
    pooled_new: set[str],
    values: list[FacetValue],
    X: np.ndarray,
    rows: dict[str, int],
    leaves: list[Node],
    additions: dict[str, list[str]],
    previous: Taxonomy,
    ctx: _Context,
) -> tuple[list[Node], dict[str, list[str]], dict[str, Any]]:
    """(new leaves, pool items joining existing leaves by leaf id, stats) from clustering the pool."""
    s = ctx.settings
    if not pooled_new or len(pool) < s.min_new_cluster_size:
        return [], {}, {"size": len(pool), "clustered": False}
    P = X[[rows[m] for m in pool]]
    texts = [values[rows[m]].text for m in pool]
    tokens = items_token_matcher(ctx.item_embedder, texts, ctx.config.cluster)
    clustered = cluster_vectors(P, settings=ctx.config.cluster, seed=ctx.config.seed, texts=texts, tokens=tokens)
    labels = refine_clusters(P, clustered.labels, settings=ctx.config.cluster.refine).labels.copy()
    is_new = np.array([m in pooled_new for m in pool])
    grown = member_centroids(_grown(leaves, additions), rows, X)
    duplicate = ctx.settings.duplicate_threshold or ctx.config.cluster.refine.merge_threshold
    joined: dict[str, list[str]] = {}
    small = 0
    for label in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == label)
        if len(members) < s.min_new_cluster_size or not is_new[members].any():
            labels[members] = -1
            small += 1
            continue
        if len(leaves):
            sims = grown @ unit(P[members].mean(axis=0))
            if sims.max() >= duplicate:
                joined.setdefault(leaves[int(sims.argmax())].id, []).extend(pool[i] for i in members)
                labels[members] = -1
    labels = canonical_labels(labels)
    stats = {
        "size": len(pool),
        "clustered": True,
        "method": clustered.method,
        "too_small": small,
        "joined_clusters": len(joined),
    }
    if labels.max(initial=-1) < 0:
        return [], joined, stats
    medoids = medoid_rows(P, labels)
    keywords = ctfidf_keywords(texts, labels)
    names = keyword_names(keywords)
    if not ctx.no_llm:
        assert ctx.llm is not None
        named = await name_clusters(
            texts, P, labels, medoids, llm=await ctx.llm.get(), settings=ctx.config.naming, events=ctx.events,
            seed=ctx.config.seed, fallback_names={k: v[0] for k, v in names.items()}, embedder=ctx.embedder,
        )  # fmt: skip
        names = {label: (n.name, n.description) for label, n in named.items()}
    order = sorted(names)
    existing = [n.name for n in previous.nodes]
    hints: list[list[str]] = [[]] * len(existing) + [keywords.get(c, []) for c in order]
    unique, _ = make_unique(existing + [names[c][0] for c in order], hints=hints)
    new_leaves = []
    for c, name in zip(order, unique[len(existing) :]):
        member_ids = [pool[i] for i in np.flatnonzero(labels == c)]
        new_leaves.append(
            Node(id=Node.make_id(0, member_ids), level=0, name=name, description=names[c][1], size=len(member_ids),
                 member_ids=member_ids, keywords=keywords.get(c, []), medoid_id=pool[medoids[c]])
        )  # fmt: skip
    return _attach(new_leaves, previous, ctx), joined, stats


def _attach(new_leaves: list[Node], previous: Taxonomy, ctx: _Context) -> list[Node]:
    """Each new leaf under the level-1 node whose "name: description" embedding is nearest to its own."""
    parents = [n for n in previous.nodes if n.level == 1]
    if not parents:
        return new_leaves
    texts = [f"{n.name}: {n.description}" for n in new_leaves + parents]
    V = embed_cached(texts, embedder=ctx.embedder, cache=ctx.store)
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    best = (V[: len(new_leaves)] @ V[len(new_leaves) :].T).argmax(axis=1)
    return [leaf.model_copy(update={"parent_id": parents[b].id}) for leaf, b in zip(new_leaves, best)]


class _HeldTaxonomy:
    """The store as the rebuild's inner build sees it: its taxonomy is held back until the IDs are mapped."""

    def __init__(self, store: Store):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put_taxonomy(self, taxonomy: Taxonomy, run_id: str | None) -> int:
        return 0


async def _rebuild(
    previous: Taxonomy, all_records: dict[str, Record], ctx: _Context
) -> tuple[Taxonomy, dict[str, Item], np.ndarray, dict[str, Any]]:
    """A full build over every stored record, with node IDs carried over from `previous` by member overlap."""
    client = None
    if not ctx.no_llm:
        assert ctx.llm is not None
        client = await ctx.llm.get()
    with ctx.timer.stage("build"), tempfile.TemporaryDirectory(prefix="clado-rebuild-") as scratch:
        built = await build_async(
            [], out=Path(scratch), config=ctx.config, store=_HeldTaxonomy(ctx.store), embedder=ctx.embedder,  # type: ignore[arg-type]
            llm=client, no_llm=ctx.no_llm, records=list(all_records.values()),
        )  # fmt: skip
    taxonomy = map_stable_ids(previous, built.taxonomy, min_jaccard=ctx.settings.id_match_jaccard)
    old_ids = {n.id for n in previous.nodes}
    kept = sum(n.id in old_ids for n in taxonomy.nodes)
    part = {
        "items": built.summary["items"],
        "unassigned": built.summary["unassigned"],
        "clusters": built.summary["clusters"],
        "ids_kept": kept,
        "ids_new": len(taxonomy.nodes) - kept,
        "extraction_errors": built.summary["extraction_errors"],
        "events": built.summary["events"],
    }
    return taxonomy, built.items, built.vectors, part


def refresh(
    inputs: list[Path | str],
    *,
    store_dir: Path | str,
    config: Config | None = None,
    rebuild: bool = False,
    wait: float = 0.0,
) -> RefreshResult:
    """Refresh the taxonomy in `store_dir` (a build's output directory) with new input files.

    Config: `config`, else the one recorded with the store's latest run. One writer per store: waits up to
    `wait` seconds for another writer, then raises StoreBusy.
    """
    store_dir = Path(store_dir)
    db = store_dir / "clado.db"
    if not db.is_file():
        raise RefreshError(f"{db} not found: --store must be the output directory of a `clado build`")
    with store_lock(db, wait=wait), Store(db) as store:
        config = config or stored_config(store)
        set_override_dir(config.prompts_dir)
        embedder = make_embedder(config.embed)
        llm = LazyLLM(lambda: llm_client(config.llm, seed=config.seed, store=store))

        async def run() -> RefreshResult:
            try:
                return await refresh_async(
                    [Path(p) for p in inputs], out=store_dir, config=config, store=store, embedder=embedder,
                    llm=llm, rebuild=rebuild,
                )  # fmt: skip
            finally:
                await llm.aclose()

        return asyncio.run(run())


def edit_store(
    store_dir: Path | str,
    op: str,
    params: list[str],
    *,
    description: str | None = None,
    wait: float = 0.0,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Apply one analyst edit to the latest taxonomy in `store_dir`, record it for replay, write a new
    version, the exports and the diff; returns a summary. Raises EditError when the edit does not apply.

    `embedder` (default: the recorded config's) only reads the cached item vectors for the 2-D map."""
    store_dir = Path(store_dir)
    db = store_dir / "clado.db"
    if not db.is_file():
        raise RefreshError(f"{db} not found: --store must be the output directory of a `clado build`")
    with store_lock(db, wait=wait), Store(db) as store:
        current = store.taxonomy()
        if current is None:
            raise RefreshError(f"{db} holds no taxonomy yet: run `clado build` first")
        edits = store.edits()
        args = make_edit(current, op, params, description=description)
        edited = apply_edit(current, op, args, locked=locked_ids(edits))
        config = stored_config(store)
        run_id = store.start_run("edit", config.stored())
        try:
            version = store.next_version()
            records = {r.id: r for r in store.records()}
            item_embedder = stored_item_embedder(
                embedder or make_embedder(config.embed), config.embed, store, current.fingerprint
            )
            loaded = taxonomy_items(store, edited, embedder=item_embedder, records=records)
            item_ids = [v.item_id for v in loaded.values]
            edited = calibrated(edited, item_ids, loaded.vectors, settings=config.routing, seed=config.seed)
            edited = with_trends(with_occurrence_sizes(edited, loaded.items), store, version=version)
            edited.version, edited.created_at = version, datetime.now(UTC)
            edited.summary["edit"] = {"op": op, **{k: v for k, v in args.items() if k != "members"}}
            conversations = any(r.messages for r in records.values())
            diff = diff_taxonomies(current, edited)
            with staged_files(store_dir) as staged:
                write_outputs(
                    edited, loaded.items, loaded.vectors, staged=staged, config=config, conversations=conversations,
                    confidence=member_probabilities(edited, item_ids, loaded.vectors),
                )  # fmt: skip
                write_diff(diff, staged)
                seq = store.add_edit(op, args)
                store.put_taxonomy(edited, run_id)
            summary = {
                "op": op,
                "seq": seq,
                "version": version,
                "previous_version": current.version,
                "diff": diff.counts(),
            }
            store.finish_run(run_id, "ok", summary)
            return summary
        except BaseException as exc:
            store.finish_run(run_id, f"failed: {type(exc).__name__}", {"error": str(exc)})
            raise
