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
        print(f"  {name:<10} {self.rows[name]['seconds']:>8.1f} s  peak {self.rows[name]['peak_rss_mb']:>8.0f} MB", flush=True)
        return out

    def total(self, names: list[str]) -> float:
        return round(sum(self.rows[n]["seconds"] for n in names if n in self.rows), 2)


def clado_stages(data: dict, stages: Stages, settings) -> np.ndarray:
    """clado's --no-llm clustering path, stage by stage: lexical side, token-matched kNN, fuzzy graph, Leiden with
    the resolution search, refinement, keywords. Returns the refined labels."""
    from clado.pipeline.cluster import knn_fuzzy_graph, leiden_labels_on_graph, token_matched_knn, token_matching_on
    from clado.pipeline.keywords import ctfidf_keywords
    from clado.pipeline.lexical import mix_lexical
    from clado.pipeline.refine import refine_clusters

    X, texts = data["X"], data["texts"]
    k = settings.knn_k
    G = stages.run("lexical", mix_lexical, X, texts, weight=settings.lexical_weight, dims=settings.lexical_dims,
                   seed=settings.seed, fit_max=settings.lexical_fit_max)  # fmt: skip
    if token_matching_on(len(X), settings):
        knn = stages.run("knn", token_matched_knn, G, data["tokens"], k=k, candidates=settings.token_match_candidates,
                         weight=settings.token_match_weight, knn=settings.knn, seed=settings.seed)  # fmt: skip
    else:
        from clado.pipeline.knn import cosine_knn

        knn = stages.run("knn", cosine_knn, G, k + 1, settings=settings.knn, seed=settings.seed)
    graph = stages.run("graph", knn_fuzzy_graph, G, k=k, seed=settings.seed, knn=knn)
    del knn
    labels, params = stages.run("leiden", leiden_labels_on_graph, X, G, graph, settings=settings, tokens=data["tokens"])
    del graph, G
    refined = stages.run("refine", refine_clusters, X, labels, settings=settings)
    stages.run("keywords", ctfidf_keywords, texts, refined.labels)
    print(f"  leiden {params}", flush=True)
    return refined.labels
