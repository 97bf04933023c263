"""Base clustering of L2-normalised embeddings: Leiden on a kNN graph, UMAP + HDBSCAN, HDBSCAN or agglomerative."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clado.backends.embed import Embedder
from clado.backends.pair_judge import PairJudge
from clado.backends.rerank import RerankSettings, knn_candidate_pairs
from clado.backends.token_match import TokenMatcher, token_matcher
from clado.pipeline.knn import KnnSettings, cosine_knn
from clado.pipeline.labels import canonical_labels
from clado.pipeline.refine import RefineSettings

Method = Literal["auto", "hdbscan", "umap_hdbscan", "agglomerative", "leiden", "rerank_leiden"]


class GraphSettings(BaseModel):
    """The kNN graph Leiden partitions: neighbours, the lexical mix and token matching."""

    model_config = ConfigDict(extra="forbid")
    knn_k: int = Field(20, ge=1, le=1000, description="Neighbours per item in the kNN graph that Leiden partitions")
    knn: KnnSettings = Field(default_factory=KnnSettings, description="Exact or approximate kNN search")
    lexical_weight: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of lexical similarity (TF-IDF word 1-2-grams of the clustering texts, SVD-reduced) mixed "
        "into the vectors Leiden's kNN graph is built on: cosines become (1-w)*embedding + w*lexical. "
        "0 = embeddings only. The resolution checks and refinement always use the embeddings",
    )
    lexical_dims: int = Field(256, ge=2, le=4096, description="SVD dimensions of the lexical vectors")
    lexical_fit_max: int = Field(
        50000,
        ge=1000,
        description="The lexical side's TF-IDF vocabulary and SVD are fitted on a fixed random sample of at most this "
        "many texts, then every text is projected in batches",
    )
    token_match_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of token matching (IDF-weighted BERTScore F over the encoder's token embeddings) in "
        "the similarities that pick each item's kNN-graph neighbours among its `token_match_candidates` nearest: "
        "(1-w)*cosine + w*F. Needs IDF pooling (sentence-transformers mean-pooling models); 0 = cosines only",
    )
    token_match_candidates: int = Field(
        50, ge=1, le=1000, description="Token matching: nearest items (by the graph's cosines) re-scored per item"
    )
    token_match_max_tokens: int = Field(
        48, ge=1, le=512, description="Token matching: tokens kept per text (the first ones; special tokens left out)"
    )
    token_match_max_items: int = Field(
        50000,
        ge=0,
        description="Token matching is left out above this many items (it scores `token_match_candidates` pairs an "
        "item, about 1 ms an item on 2 cores, and its token embeddings take about 18 KB an item); cosines only then",
    )


class ResolutionSettings(BaseModel):
    """Leiden's resolution: searched from the data (auto), scaled with the input size, or fixed."""

    model_config = ConfigDict(extra="forbid")
    leiden_resolution: Annotated[float, Field(gt=0)] | Literal["auto", "search", "size"] = Field(
        "auto",
        description="RB-configuration resolution. auto (alias: search) = chosen from the data: resolutions on a "
        "sqrt(2) grid from `search_min_resolution` to `search_max_resolution` are tried in increasing order and the "
        "highest acceptable one wins; a partition is acceptable when at most `search_max_near_share` of its clusters "
        "have a near-duplicate (nearest other centroid cosine >= `search_near_cosine`), at most "
        "`search_max_twin_share` have a graph twin (another cluster holding >= `search_twin_edge_share` of their "
        "kNN edge weight) and the median cluster has at least `search_min_median_size` items; the search stops "
        "after `search_patience` unacceptable resolutions in a row. size = n_items / leiden_items_per_resolution "
        "(the old rule: it keeps the cluster size fixed, so it over-splits large inputs); a number = fixed",
    )
    leiden_items_per_resolution: float = Field(300.0, gt=0, description="Items per unit of resolution when it is size")
    search_near_cosine: float = Field(
        0.85,
        ge=-1,
        le=1,
        description="Resolution search: clusters whose centroids have at least this cosine are near-duplicates",
    )
    search_max_near_share: float = Field(
        0.05, ge=0, le=1, description="Resolution search: highest share of clusters allowed to have a near-duplicate"
    )
    search_twin_edge_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Resolution search: a cluster whose kNN edge weight goes to one other cluster at least this "
        "much (share of its total edge weight) has a graph twin (the two are likely one topic cut in two)",
    )
    search_max_twin_share: float = Field(
        0.015, ge=0, le=1, description="Resolution search: highest share of clusters allowed to have a graph twin"
    )
    search_min_median_size: int = Field(10, ge=1, description="Resolution search: smallest median cluster size allowed")
    search_min_resolution: float = Field(1.0, gt=0, description="Resolution search: lowest resolution tried")
    search_max_resolution: float = Field(64.0, gt=0, description="Resolution search: highest resolution tried")
    search_patience: int = Field(
        2, ge=1, description="Resolution search: stop after this many unacceptable resolutions in a row"
    )
    search_step_back: float = Field(
        0.875,
        ge=0,
        le=1,
        description="Resolution search: from the highest acceptable resolution, step back to the next lower acceptable "
        "one while the median cluster size shrank below this share of its size there (a step that halves ordinary "
        "clusters overshoots; once clusters match the topics, finer resolutions mostly split off fragments and the "
        "median stays flat); 0 = keep the highest",
    )
    search_sample: int = Field(
        20000,
        ge=1000,
        description="Resolution search on inputs larger than this: the search runs on the kNN graph of a fixed random "
        "sample of this many items, then Leiden runs once on the whole graph at the resolution it chose",
    )
    large_leiden_iterations: int = Field(
        2,
        ge=1,
        description="Leiden iterations on inputs larger than `search_sample` (smaller ones iterate until nothing "
        "moves): on 46k real queries 2 iterations take 9 s instead of 60 s, and the partitions agree at NMI 0.99",
    )

    @property
    def searches_resolution(self) -> bool:
        """Whether Leiden's resolution is chosen from the data (auto/search)."""
        return self.leiden_resolution in ("auto", "search")


class HdbscanSettings(BaseModel):
    """HDBSCAN on the raw vectors (hdbscan) or on a UMAP projection (umap_hdbscan)."""

    model_config = ConfigDict(extra="forbid")
    umap_dims: int = Field(10, ge=1, le=1000, description="UMAP output dimensions for umap_hdbscan")
    umap_neighbors: int = Field(15, ge=2, le=1000, description="UMAP n_neighbors for umap_hdbscan")
    umap_min_dist: float = Field(0.0, ge=0, le=1, description="UMAP min_dist for umap_hdbscan")
    min_cluster_size: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto", description="HDBSCAN min_cluster_size; auto = clip(round(sqrt(n) / 4), 5, 100)"
    )
    min_samples: Annotated[int, Field(ge=1)] | None = Field(
        3, description="HDBSCAN min_samples (None = min_cluster_size)"
    )
    cluster_selection: Literal["eom", "leaf"] = Field("eom", description="HDBSCAN cluster selection method")


class ClusterSettings(BaseModel):
    """How base clusters are formed and refined; defaults were chosen without knowing any dataset's cluster count."""

    model_config = ConfigDict(extra="forbid")
    method: Method = Field(
        "auto",
        description="auto = agglomerative below `small_input` items, else leiden; "
        "hdbscan works on the raw vectors, umap_hdbscan on a UMAP projection; rerank_leiden = Leiden on "
        "the reranker graph over embedding-kNN candidate pairs (needs a reranker)",
    )
    small_input: int = Field(200, ge=0, description="auto uses agglomerative clustering below this many items")
    agglomerative_threshold: float = Field(
        0.55,
        ge=-1,
        le=1,
        description="Average-linkage agglomerative: clusters join while their mean cosine is at least this",
    )
    graph: GraphSettings = Field(default_factory=GraphSettings)
    resolution: ResolutionSettings = Field(default_factory=ResolutionSettings)
    hdbscan: HdbscanSettings = Field(default_factory=HdbscanSettings)
    refine: RefineSettings = Field(default_factory=RefineSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)


class Clusterer(Protocol):
    """Anything shaped like a scikit-learn clusterer."""

    labels_: np.ndarray

    def fit(self, X: np.ndarray) -> Any: ...


@dataclass
class ClusterResult:
    """Labels 0..k-1 (largest cluster first), -1 = noise."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    method: str
    params: dict[str, Any] = field(default_factory=dict)


def auto_min_cluster_size(n: int) -> int:
    """Size-aware HDBSCAN min_cluster_size: grows with the square root of the input size."""
    return int(np.clip(round(math.sqrt(n) / 4), 5, 100))


def token_matched_knn(
    X: np.ndarray,
    tokens: TokenMatcher,
    *,
    k: int,
    candidates: int,
    weight: float,
    knn: KnnSettings | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's k nearest (self first) among its `candidates` nearest by cosine, re-scored as
    (1 - weight)·cosine + weight·token-match F; distances are 1 - that score."""
    idx, dist = cosine_knn(X, max(candidates, k) + 1, settings=knn or KnnSettings(), seed=seed)
    return rescore_by_tokens(idx, dist, tokens, k=k, weight=weight)


def rescore_by_tokens(
    idx: np.ndarray, dist: np.ndarray, tokens: TokenMatcher, *, k: int, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row's cosine neighbours (self first, then candidates) by (1 - weight)·cosine +
    weight·token-match F, with distances 1 - that score."""
    n, c = idx.shape[0], idx.shape[1] - 1
    f = tokens.scores(np.repeat(np.arange(n), c), idx[:, 1:].ravel()).reshape(n, c)
    score = (1.0 - weight) * (1.0 - dist[:, 1:]) + weight * f
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]
    top = np.column_stack([idx[:, 0], np.take_along_axis(idx[:, 1:], order, axis=1)])
    d = np.column_stack([np.zeros(n), 1.0 - np.take_along_axis(score, order, axis=1)])
    return top, np.maximum(d, 0.0).astype(np.float32)


def knn_fuzzy_graph(
    X: np.ndarray,
    *,
    k: int,
    seed: int,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    settings: KnnSettings | None = None,
):
    """UMAP's fuzzy simplicial set over the cosine kNN graph (or the given `knn` indices and distances,
    self first, k + 1 per row), as a weighted igraph Graph."""
    import igraph as ig
    from umap.umap_ import fuzzy_simplicial_set

    idx, dist = knn if knn is not None else cosine_knn(X, k + 1, settings=settings or KnnSettings(), seed=seed)
    graph, _, _ = fuzzy_simplicial_set(X, k + 1, np.random.RandomState(seed), "cosine", knn_indices=idx, knn_dists=dist)
    coo = graph.tocoo()
    upper = coo.row < coo.col
    edges = np.column_stack([coo.row[upper], coo.col[upper]]).astype(np.int64)
    g = ig.Graph(n=len(X), edges=edges)
    g.es["weight"] = coo.data[upper].astype(np.float64)
    return g


def leiden_resolution(n: int, settings: ResolutionSettings) -> float:
    """A fixed resolution, or (size) n / leiden_items_per_resolution, at least 1; auto/search are data-driven."""
    if settings.searches_resolution:
        raise ValueError("resolution auto/search is chosen from the data: use search_leiden")
    if settings.leiden_resolution == "size":
        return max(1.0, n / settings.leiden_items_per_resolution)
    return float(settings.leiden_resolution)


def leiden_partition(graph, *, resolution: float, seed: int, iterations: int = -1) -> np.ndarray:
    """Leiden (RB configuration, edge attribute `weight`) membership of every vertex, canonically numbered;
    `iterations` -1 = until no vertex moves."""
    import leidenalg

    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=resolution,
        seed=seed,
        n_iterations=iterations,
    )
    return canonical_labels(np.asarray(partition.membership))


def graph_edges(graph) -> tuple[np.ndarray, np.ndarray]:
    """The graph's edges as an (m, 2) array of endpoints and their weights (1 when unweighted)."""
    edges = np.asarray(graph.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    weights = graph.es["weight"] if "weight" in graph.es.attributes() else [1.0] * len(edges)
    return edges, np.asarray(weights, dtype=np.float64)


def partition_diagnostics(
    X: np.ndarray, labels: np.ndarray, edges: np.ndarray, weights: np.ndarray, *, settings: ResolutionSettings
) -> dict[str, float]:
    """Label-free signs of over-splitting: near-duplicate share (centroid cosine), graph-twin share (share of
    clusters sending at least `search_twin_edge_share` of their edge weight to a single other cluster), median size."""
    from scipy.sparse import coo_matrix

    sizes = np.bincount(labels[labels >= 0])
    k = len(sizes)
    if k < 2:
        return {"clusters": k, "near_share": 0.0, "twin_share": 0.0, "median_size": float(sizes.sum())}
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[labels >= 0], X[labels >= 0])
    C = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    S = C @ C.T
    np.fill_diagonal(S, -np.inf)
    near_share = float(np.mean(S.max(axis=1) >= settings.search_near_cosine))
    twin_share = 0.0
    ok = (labels[edges[:, 0]] >= 0) & (labels[edges[:, 1]] >= 0) if len(edges) else np.zeros(0, dtype=bool)
    if ok.any():
        a, b, w = labels[edges[ok, 0]], labels[edges[ok, 1]], weights[ok]
        W = coo_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(k, k)).toarray()
        volume = W.sum(axis=1)
        np.fill_diagonal(W, 0.0)
        strongest = np.divide(W.max(axis=1), volume, out=np.zeros(k), where=volume > 0)
        twin_share = float(np.mean(strongest >= settings.search_twin_edge_share))
    return {"clusters": k, "near_share": near_share, "twin_share": twin_share, "median_size": float(np.median(sizes))}


def diagnostics_acceptable(d: dict[str, float], settings: ResolutionSettings) -> bool:
    """Whether partition diagnostics stay within the search's limits."""
    return (
        d["near_share"] <= settings.search_max_near_share
        and d["twin_share"] <= settings.search_max_twin_share
        and d["median_size"] >= settings.search_min_median_size
    )


def resolution_grid(settings: ResolutionSettings) -> list[float]:
    """search_min_resolution * sqrt(2)^i up to search_max_resolution."""
    grid, r = [], settings.search_min_resolution
    while r <= settings.search_max_resolution + 1e-9:
        grid.append(r)
        r *= math.sqrt(2)
    return grid or [settings.search_min_resolution]


def search_leiden(
    X: np.ndarray, graph, *, settings: ResolutionSettings, seed: int, iterations: int = -1
) -> tuple[np.ndarray, float, int]:
    """The highest acceptable resolution on the grid (stopping after `search_patience` failures in a row), or a
    lower acceptable one where the median cluster size fell too steeply on the way up (`step_back`).

    A fixed resolution keeps a roughly fixed number of clusters and n/300 a fixed cluster size; neither fits
    every input, so over-splitting is detected from the partitions themselves. When no resolution is
    acceptable the lowest is used. Returns the labels, the resolution chosen and how many were tried.
    """
    edges, weights = graph_edges(graph)
    accepted: list[tuple[np.ndarray, float, float]] = []  # labels, resolution, median size; resolution ascending
    first: tuple[np.ndarray, float] | None = None
    failures = tried = 0
    for resolution in resolution_grid(settings):
        labels = leiden_partition(graph, resolution=resolution, seed=seed, iterations=iterations)
        tried += 1
        first = first or (labels, resolution)
        diagnostics = partition_diagnostics(X, labels, edges, weights, settings=settings)
        if diagnostics_acceptable(diagnostics, settings):
            accepted.append((labels, resolution, diagnostics["median_size"]))
            failures = 0
        else:
            failures += 1
            if failures >= settings.search_patience:
                break
    if not accepted:
        assert first is not None
        return first[0], first[1], tried
    labels, resolution = step_back(accepted, ratio=settings.search_step_back)
    return labels, resolution, tried


def step_back(accepted: list[tuple[np.ndarray, float, float]], *, ratio: float) -> tuple[np.ndarray, float]:
    """From the last (highest-resolution) acceptable partition, step to the one before while the median cluster
    size at the step is below `ratio` times the size before it. `accepted` = (labels, resolution, median size)."""
    j = len(accepted) - 1
    while j > 0 and accepted[j][2] < ratio * accepted[j - 1][2]:
        j -= 1
    return accepted[j][0], accepted[j][1]


def partition_graph(
    X: np.ndarray, graph, *, settings: ResolutionSettings, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden on a graph over the rows of X at a searched (auto), size-scaled or fixed resolution."""
    params: dict[str, Any] = {}
    if settings.searches_resolution:
        labels, resolution, params["resolutions_tried"] = search_leiden(X, graph, settings=settings, seed=seed)
    else:
        resolution = leiden_resolution(len(X), settings)
        labels = leiden_partition(graph, resolution=resolution, seed=seed)
    return labels, params | {"resolution": round(resolution, 4)}


def token_matching_on(n: int, settings: GraphSettings) -> bool:
    """Whether Leiden's graph over n items re-scores neighbours by token matching (given a matcher)."""
    return settings.token_match_weight > 0 and n <= settings.token_match_max_items


def graph_of(G: np.ndarray, tokens: TokenMatcher | None, *, settings: GraphSettings, seed: int):
    """The fuzzy kNN graph of the graph vectors G, neighbours re-scored by token matching when `tokens` are given."""
    k = min(settings.knn_k, len(G) - 1)
    knn = None
    if tokens is not None:
        candidates = min(settings.token_match_candidates, len(G) - 1)
        knn = token_matched_knn(
            G, tokens, k=k, candidates=candidates, weight=settings.token_match_weight, knn=settings.knn, seed=seed
        )
    return knn_fuzzy_graph(G, k=k, seed=seed, knn=knn, settings=settings.knn)


def leiden_labels_on_graph(
    X: np.ndarray,
    G: np.ndarray,
    graph,
    *,
    settings: ClusterSettings,
    seed: int,
    tokens: TokenMatcher | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden on `graph` (over the rows of X; G = its graph vectors). Above `search_sample` items the resolution is
    searched on the graph of a fixed random sample (built the same way), then used once on the whole graph."""
    n, search = len(X), settings.resolution
    if not search.searches_resolution or n <= search.search_sample:
        return partition_graph(X, graph, settings=search, seed=seed)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=search.search_sample, replace=False))
    sample_graph = graph_of(
        G[rows], None if tokens is None else tokens.on_rows(rows), settings=settings.graph, seed=seed
    )
    iterations = search.large_leiden_iterations
    _, resolution, tried = search_leiden(X[rows], sample_graph, settings=search, seed=seed, iterations=iterations)
    labels = leiden_partition(graph, resolution=resolution, seed=seed, iterations=iterations)
    return labels, {"resolution": round(resolution, 4), "resolutions_tried": tried, "searched_on": len(rows)}


def leiden_labels(
    X: np.ndarray,
    *,
    settings: ClusterSettings,
    seed: int,
    texts: list[str] | None = None,
    tokens: TokenMatcher | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden on the fuzzy kNN graph of the vectors, mixed with the texts' lexical vectors when texts are given
    and with neighbours re-scored by token matching when `tokens` are (up to `token_match_max_items`)."""
    from clado.pipeline.lexical import mix_lexical

    G, on = X, settings.graph
    if texts is not None:
        G = mix_lexical(X, texts, weight=on.lexical_weight, dims=on.lexical_dims, seed=seed, fit_max=on.lexical_fit_max)
    tokens = tokens if tokens is not None and token_matching_on(len(X), on) else None
    graph = graph_of(G, tokens, settings=on, seed=seed)
    labels, params = leiden_labels_on_graph(X, G, graph, settings=settings, seed=seed, tokens=tokens)
    k = min(on.knn_k, len(X) - 1)
    return labels, {"knn_k": k, "lexical": G is not X, "token_match": tokens is not None} | params


def top_m_edges(pairs: list[tuple[int, int]], scores: list[float | None], *, threshold: float, m: int) -> dict:
    """Scored pairs at or above `threshold` that are among the `m` best of either endpoint: {(i, j): score}."""
    kept = [(p, s) for p, s in zip(pairs, scores, strict=True) if s is not None and s >= threshold]
    per_node: dict[int, list[tuple[float, tuple[int, int]]]] = {}
    for pair, score in kept:
        for node in pair:
            per_node.setdefault(node, []).append((score, pair))
    chosen: set[tuple[int, int]] = set()
    for edges in per_node.values():
        chosen.update(pair for _, pair in sorted(edges, key=lambda e: (-e[0], e[1]))[:m])
    return {pair: score for pair, score in kept if pair in chosen}


def rerank_leiden_labels(
    X: np.ndarray, *, judge: PairJudge, settings: ClusterSettings, seed: int
) -> tuple[np.ndarray, dict]:
    """Leiden on the reranker graph: kNN candidate pairs (within the judge's budget) scored, top-m edges kept.

    Items left without an edge, or alone in their community, are noise for refinement to re-home.
    """
    import igraph as ig

    n = len(X)
    pairs = knn_candidate_pairs(X, k=settings.rerank.rerank_knn_k, budget=judge.remaining)
    edges = top_m_edges(pairs, judge.scores(pairs), threshold=judge.threshold, m=settings.rerank.rerank_top_m)
    graph = ig.Graph(n=n, edges=list(edges), edge_attrs={"weight": list(edges.values())})
    labels, params = partition_graph(X, graph, settings=settings.resolution, seed=seed)
    sizes = np.bincount(labels)
    labels = np.where(sizes[labels] > 1, labels, -1)
    return labels, {"candidate_pairs": len(pairs), "edges": len(edges)} | params


def umap_project(X: np.ndarray, *, settings: HdbscanSettings, seed: int) -> np.ndarray:
    """UMAP projection of the vectors (cosine metric) for density clustering."""
    import umap

    n = len(X)
    reducer = umap.UMAP(
        n_neighbors=min(settings.umap_neighbors, n - 1),
        n_components=min(settings.umap_dims, n - 2),
        min_dist=settings.umap_min_dist,
        metric="cosine",
        random_state=seed,
        init="spectral" if n > settings.umap_dims + 2 else "random",
    )
    return reducer.fit_transform(X)


def hdbscan_labels(Z: np.ndarray, *, settings: HdbscanSettings) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """HDBSCAN on Euclidean vectors (unit vectors: Euclidean order equals cosine order)."""
    import hdbscan

    mcs = auto_min_cluster_size(len(Z)) if settings.min_cluster_size == "auto" else settings.min_cluster_size
    model = hdbscan.HDBSCAN(
        min_cluster_size=mcs,
        min_samples=settings.min_samples,
        cluster_selection_method=settings.cluster_selection,
        core_dist_n_jobs=1,
    ).fit(Z)
    params = {"min_cluster_size": mcs, "min_samples": settings.min_samples, "selection": settings.cluster_selection}
    return model.labels_, model.probabilities_, params


def agglomerative_labels(X: np.ndarray, *, settings: ClusterSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """Average-linkage clustering on cosine distance, cut where the mean similarity drops below the threshold."""
    from sklearn.cluster import AgglomerativeClustering

    if len(X) < 2:
        return np.zeros(len(X), dtype=np.int64), {"threshold": settings.agglomerative_threshold}
    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=1.0 - settings.agglomerative_threshold
    ).fit(X)
    return model.labels_, {"threshold": settings.agglomerative_threshold}


def resolve_method(n: int, settings: ClusterSettings) -> str:
    """The concrete method `auto` stands for at this input size."""
    if settings.method != "auto":
        return settings.method
    return "agglomerative" if n < settings.small_input else "leiden"


def items_token_matcher_wanted(n: int, settings: ClusterSettings) -> bool:
    """Whether token matching is on and Leiden will cluster these n items."""
    return token_matching_on(n, settings.graph) and resolve_method(n, settings) == "leiden"


def items_token_matcher(embedder: Embedder, texts: list[str], settings: ClusterSettings) -> TokenMatcher | None:
    """The items' token matcher when token matching is on and Leiden will cluster them (the token rows the
    embedder kept while embedding, else one more forward pass)."""
    if not items_token_matcher_wanted(len(texts), settings):
        return None
    return token_matcher(embedder, texts, max_tokens=settings.graph.token_match_max_tokens)


def cluster_vectors(
    X: np.ndarray,
    *,
    settings: ClusterSettings,
    seed: int = 0,
    clusterer: Clusterer | None = None,
    judge: PairJudge | None = None,
    texts: list[str] | None = None,
    tokens: TokenMatcher | None = None,
) -> ClusterResult:
    """Cluster L2-normalised vectors; `clusterer` (any object with fit and labels_) replaces the built-in methods.

    `judge` (a reranker over the items' texts) is needed by method rerank_leiden only; `texts` (the items'
    clustering texts) add the lexical signal to Leiden's graph (`graph.lexical_weight`) and `tokens` (their token
    matcher) re-score its neighbours (`graph.token_match_weight`). `seed` seeds every random choice (the kNN
    index, UMAP, Leiden and the sampled resolution search).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"cluster_vectors expects a 2-D array, got shape {X.shape}")
    n = len(X)
    if n == 0:
        return ClusterResult(np.empty(0, dtype=np.int64), None, "empty", {})
    probabilities = None
    params: dict[str, Any]
    if clusterer is not None:
        clusterer.fit(X)
        labels, method, params = np.asarray(clusterer.labels_), type(clusterer).__name__, {}
        probabilities = getattr(clusterer, "probabilities_", None)
    elif n < 3:
        labels, method, params = np.zeros(n, dtype=np.int64), "single", {}
    else:
        method = resolve_method(n, settings)
        if method == "leiden":
            labels, params = leiden_labels(X, settings=settings, seed=seed, texts=texts, tokens=tokens)
        elif method == "agglomerative":
            labels, params = agglomerative_labels(X, settings=settings)
        elif method == "rerank_leiden":
            if judge is None:
                raise ValueError("method rerank_leiden needs a reranker (cluster.reranker) and the items' texts")
            labels, params = rerank_leiden_labels(X, judge=judge, settings=settings, seed=seed)
        elif method == "umap_hdbscan":
            Z = umap_project(X, settings=settings.hdbscan, seed=seed)
            labels, probabilities, params = hdbscan_labels(Z, settings=settings.hdbscan)
            params |= {"umap_dims": Z.shape[1], "umap_neighbors": min(settings.hdbscan.umap_neighbors, n - 1)}
        elif method == "hdbscan":
            labels, probabilities, params = hdbscan_labels(X, settings=settings.hdbscan)
        else:
            raise ValueError(f"unknown clustering method {method!r}")
    if len(labels) != n:
        raise ValueError(f"clusterer returned {len(labels)} labels for {n} items")
    canon = canonical_labels(labels)
    return ClusterResult(
        labels=canon,
        probabilities=None if probabilities is None else np.asarray(probabilities, dtype=np.float32),
        method=method,
        params=params | {"clusters": int(canon.max() + 1), "noise": int((canon < 0).sum())},
    )
