"""Scale benchmark: clado's clustering at 10k, 100k and 1M items against BERTopic's recipe, and a real build.

Items are synthesised from the real MiniLM vectors (IDF-pooled, as clado embeds them) of every text in
../shared/data (Banking77, CLINC150, the first user turn of each STAR dialogue, SemEval restaurant sentences,
about 46k texts). Item r copies seed s(r): the first n_real items are the real items themselves (plus small
Gaussian noise), later copies lie between their seed and one of its 10 nearest real neighbours
(unit(x_s + λ·(x_j − x_s) + ε), λ ~ U(0, 0.5)), so the seed stays the nearest real item and its gold label is
carried along. Pure noise around the seed would not do: in 384 dimensions every copy of a seed is nearer to
the seed's other copies than to any other real text, and at 1M (about 21 copies a seed) each item's 20 graph
neighbours would be its own copies. For the same reason a copy's text is its seed's text with each word
dropped with probability 0.25 (at least two kept) and its token rows (for token matching) are the seed's with
each row dropped likewise; first occurrences keep the real text and rows. Gold labels are read for scoring only.

Each size runs in its own subprocess, so peak RSS (ru_maxrss) is per size; the stages report their own wall time
and the process's peak RSS after each. At 10k and 100k the BERTopic recipe (UMAP 5-d + HDBSCAN) runs on the same
vectors in the same process. `--build` times `clado build --no-llm` end to end on all the texts (one JSONL
file), then again with nothing changed. Timings come from a shared 2-core machine.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000 100000 1000000] [--build] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 0
NEIGHBOURS = 10  # a copy lies between its seed and one of the seed's nearest real items
NOISE = 0.01  # per-dimension standard deviation of the Gaussian noise (norm about 0.2 in 384-d)
DROP = 0.25  # word / token-row dropout of a copy's text


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def first_user_turn(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), messages[0]["content"])


def load_texts(data_dir: Path) -> tuple[list[str], list[str]]:
    """Every text of the four sets (STAR: the first user turn) and its gold label, prefixed by the set."""
    texts, labels = [], []
    for name in ("banking77", "clinc150", "star_dialogues", "semeval2016_restaurants"):
        for line in (data_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = first_user_turn(row["messages"]) if "messages" in row else row["text"]
            label = row.get("label") or (row.get("labels") or ["none"])[0]
            texts.append(text)
            labels.append(f"{name}:{label}")
    return texts, labels


def real_vectors(data_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    """The real items' IDF-pooled MiniLM vectors, token rows and 10 nearest neighbours (cached in `cache`)."""
    path = cache / "real.npz"
    if path.exists():
        return dict(np.load(path, allow_pickle=True))
    from clado.backends.embed import EmbedSettings, make_embedder
    from clado.backends.idf_pooling import fitted_item_embedder
    from clado.backends.token_match import token_matcher
    from clado.pipeline.knn import exact_knn

    texts, labels = load_texts(data_dir)
    settings = EmbedSettings()
    embedder = fitted_item_embedder(make_embedder(settings), settings, None, texts)
    embedder.keep_tokens(48)
    start = time.perf_counter()
    X = np.vstack([embedder.embed(texts[i : i + 2048]) for i in range(0, len(texts), 2048)])
    seconds = time.perf_counter() - start
    tokens = token_matcher(embedder, texts, max_tokens=48)
    knn, _ = exact_knn(X, NEIGHBOURS + 1)
    data = {
        "X": X.astype(np.float32), "texts": np.array(texts, dtype=object), "labels": np.array(labels, dtype=object),
        "tokens": tokens.tokens, "weights": tokens.weights, "offsets": tokens.offsets, "index": tokens.index,
        "knn": knn[:, 1:], "embed_seconds": np.array(seconds),
    }  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return dict(np.load(path, allow_pickle=True))


def dropout(text: str, rng: np.random.Generator) -> str:
    """The text with each word dropped with probability DROP, keeping at least two (or all, when fewer)."""
    words = text.split()
    keep = rng.random(len(words)) >= DROP
    if keep.sum() < min(2, len(words)):
        keep[rng.choice(len(words), size=min(2, len(words)), replace=False)] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def synthesise(real: dict[str, np.ndarray], n: int, *, seed: int = SEED) -> dict:
    """n items from the real ones: seeds, unit vectors, texts, gold labels and the seeds' token matcher."""
    from clado.backends.token_match import TokenMatcher
    from clado.vectors import unit

    rng = np.random.default_rng(seed)
    X, n_real = real["X"], len(real["X"])
    seeds = np.concatenate([rng.permutation(n_real) for _ in range(-(-n // n_real))])[:n]
    first = np.zeros(n, dtype=bool)
    first[: min(n, n_real)] = True  # the first pass over the seeds is the real items themselves
    lam = np.where(first, 0.0, rng.uniform(0.0, 0.5, size=n)).astype(np.float32)
    partner = real["knn"][seeds, rng.integers(0, NEIGHBOURS, size=n)]
    V = np.empty((n, X.shape[1]), dtype=np.float32)
    for start in range(0, n, 65536):
        s = slice(start, start + 65536)
        base = X[seeds[s]] + lam[s, None] * (X[partner[s]] - X[seeds[s]])
        V[s] = unit(base + rng.normal(0.0, NOISE, size=base.shape).astype(np.float32))
    texts = [real["texts"][i] if f else dropout(real["texts"][i], rng) for i, f in zip(seeds.tolist(), first)]
    tokens = TokenMatcher(real["tokens"], real["weights"], real["offsets"], real["index"][seeds])
    return {"X": V, "texts": texts, "gold": real["labels"][seeds].tolist(), "tokens": tokens, "seeds": seeds}


class Stages:
    """Wall time and the process's peak RSS after each stage."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows[name] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": peak_rss_mb()}
        row = self.rows[name]
        print(f"  {name:<10} {row['seconds']:>8.1f} s  peak {row['peak_rss_mb']:>8.0f} MB", file=sys.stderr, flush=True)
        return out

    def total(self, names: list[str]) -> float:
        return round(sum(self.rows[n]["seconds"] for n in names if n in self.rows), 2)


def clado_stages(data: dict, stages: Stages, settings) -> tuple[np.ndarray, dict]:
    """clado's --no-llm clustering path, stage by stage: lexical side, cosine kNN, token-matching re-score, fuzzy
    graph, Leiden with the resolution search, refinement, keywords. Returns the refined labels and figures."""
    from clado.pipeline.cluster import knn_fuzzy_graph, leiden_labels_on_graph, rescore_by_tokens, token_matching_on
    from clado.pipeline.keywords import ctfidf_keywords
    from clado.pipeline.knn import cosine_knn
    from clado.pipeline.lexical import mix_lexical
    from clado.pipeline.refine import refine_clusters

    X, texts, on = data["X"], data["texts"], settings.graph
    k = on.knn_k
    G = stages.run("lexical", mix_lexical, X, texts, weight=on.lexical_weight, dims=on.lexical_dims,
                   seed=SEED, fit_max=on.lexical_fit_max)  # fmt: skip
    tokens = data["tokens"] if token_matching_on(len(X), on) else None
    width = (on.token_match_candidates if tokens is not None else k) + 1
    knn = stages.run("knn", cosine_knn, G, width, settings=on.knn, seed=SEED)
    figures = {"knn_recall": knn_recall(G, knn[0]), "ann": len(X) >= on.knn.exact_below}
    if tokens is not None:
        knn = stages.run("tokens", rescore_by_tokens, *knn, tokens, k=k, weight=on.token_match_weight)
    graph = stages.run("graph", knn_fuzzy_graph, G, k=k, seed=SEED, knn=knn)
    del knn
    labels, params = stages.run(
        "leiden", leiden_labels_on_graph, X, G, graph, settings=settings, seed=SEED, tokens=tokens
    )
    del graph, G
    refined = stages.run("refine", refine_clusters, X, labels, settings=settings.refine)
    stages.run("keywords", ctfidf_keywords, texts, refined.labels)
    return refined.labels, figures | {"token_match": tokens is not None, "leiden": params}


def knn_recall(G: np.ndarray, idx: np.ndarray, *, queries: int = 1000) -> float:
    """recall@k of the kNN rows of a fixed random sample of items against their exact neighbours."""
    from clado.pipeline.knn import recall_at_k

    rows = np.sort(np.random.default_rng(SEED).choice(len(G), size=min(queries, len(G)), replace=False))
    sims = G[rows] @ G.T
    sims[np.arange(len(rows)), rows] = np.inf
    exact = np.argsort(-sims, axis=1, kind="stable")[:, : idx.shape[1]]
    return round(recall_at_k(idx[rows], exact), 4)


def bertopic_stage(X: np.ndarray, stages: Stages) -> np.ndarray:
    from clado.eval.baselines import bertopic_recipe

    return stages.run("bertopic", bertopic_recipe, X, seed=SEED)


def run_size(n: int, data_dir: Path, cache: Path, *, bertopic: bool) -> dict:
    """One size in this process: synthesis, clado's stages, the BERTopic recipe; scores and figures."""
    from clado.eval.metrics import score_labels
    from clado.pipeline.cluster import ClusterSettings

    real = real_vectors(data_dir, cache)
    stages = Stages()
    data = stages.run("synthesise", synthesise, real, n)
    del real
    settings = ClusterSettings(method="leiden")
    labels, figures = clado_stages(data, stages, settings)
    clado_names = ["lexical", "knn", "tokens", "graph", "leiden", "refine", "keywords"]
    result = {
        "n": n,
        "clado": {**_scores(score_labels(labels.tolist(), data["gold"])), "seconds": stages.total(clado_names),
                  **figures},
    }  # fmt: skip
    if bertopic:
        pred = bertopic_stage(data["X"], stages)
        result["bertopic_recipe"] = {**_scores(score_labels(pred.tolist(), data["gold"])),
                                     "seconds": stages.total(["bertopic"])}  # fmt: skip
    result["stages"] = stages.rows
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _scores(s: dict) -> dict:
    keep = ("nmi", "ari", "acc", "n_clusters", "n_gold", "unassigned_share")
    return {k: round(s[k], 4) if isinstance(s[k], float) else s[k] for k in keep}


def build_once(path: Path, out: Path) -> dict:
    """`clado build --no-llm` in this process: wall time, the build's stage seconds and peak RSS."""
    import clado

    start = time.perf_counter()
    result = clado.build(path, out=out, no_llm=True)
    seconds = round(time.perf_counter() - start, 2)
    s = result.summary
    return {"seconds": seconds, "stages": s["seconds"], "peak_rss_mb": peak_rss_mb(), "records": s["records"],
            "clusters": s["clusters"], "cached": bool(s.get("cached"))}  # fmt: skip


def time_build(data_dir: Path, cache: Path) -> dict:
    """Two builds of all the texts into a fresh folder, each in its own process: the first and a re-run."""
    import shutil

    texts, _ = load_texts(data_dir)
    path = cache / "all_texts.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    out = cache / "build"
    shutil.rmtree(out, ignore_errors=True)
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        cmd = [sys.executable, __file__, "--build-once", str(path), "--out", str(out)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        runs.append(
            json.loads(done.stdout.strip().splitlines()[-1])
            | {"process_seconds": round(time.perf_counter() - start, 2)}
        )
    return {"texts": len(texts), "first": runs[0], "rerun": runs[1],
            "rerun_share": round(runs[1]["seconds"] / runs[0]["seconds"], 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/clado_bench_scale"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[10000, 100000, 1000000])
    parser.add_argument("--bertopic-max", type=int, default=100000, help="Largest size the BERTopic recipe runs at")
    parser.add_argument("--build", action="store_true", help="Also time clado build --no-llm on all the texts")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--build-once", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_scale.json")
    args = parser.parse_args()
    if args.build_once:
        print(json.dumps(build_once(args.build_once, args.out)))
        return
    if args.one:
        print(json.dumps(run_size(args.one, args.data, args.cache_dir, bertopic=args.one <= args.bertopic_max)))
        return
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report["machine"] = "2 shared cores (other jobs running), 24 GiB"
    for n in args.sizes:
        print(f"size {n}", flush=True)
        cmd = [sys.executable, __file__, "--one", str(n), "--data", str(args.data), "--cache-dir", str(args.cache_dir),
               "--bertopic-max", str(args.bertopic_max)]  # fmt: skip
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        report.setdefault("sizes", {})[str(n)] = result
        print(json.dumps({k: result[k] for k in result if k != "stages"}), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.build:
        report["build"] = time_build(args.data, args.cache_dir)
        print(json.dumps(report["build"]), flush=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
