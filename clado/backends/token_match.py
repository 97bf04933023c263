"""Token matching: a pair similarity from the encoder's token embeddings (IDF-weighted BERTScore F).

Pooled vectors blur intents that differ in one key word ("card arrival" vs "card delivery estimate").
Matching every token of one text to its most similar token of the other (cosine of the contextual token
embeddings), weighted by the tokens' IDF, keeps those words apart: recall goes from a to b, precision from
b to a, and the score is their harmonic mean. Leiden's kNN graph re-scores each item's nearest candidates
by the pooled vectors with it (`cluster.token_match_weight`).

It needs the token embeddings and document frequencies of the IDF-pooled embedder, so it applies where IDF
pooling does (sentence-transformers models with mean pooling: MiniLM, mpnet).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from clado.backends.embed import PROGRESS_MIN_TEXTS, Embedder
from clado.backends.idf_pooling import IdfPooledEmbedder
from clado.progress import progress_bar

CHUNK = 512  # texts per forward pass between progress updates


class TokenMatcher:
    """The unit token embeddings of distinct texts, stored flat: text t owns rows offsets[t]:offsets[t + 1] of
    `tokens` (N, d) and `weights` (N,) (its tokens' IDF weights, all > 0). Item i is text `index[i]`, so items
    with the same text (and subsets made by `on_rows`) share the rows instead of copying them."""

    def __init__(self, tokens: np.ndarray, weights: np.ndarray, offsets: np.ndarray, index: np.ndarray | None = None):
        if len(tokens) != len(weights) or offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) < 0).any():
            raise ValueError(f"tokens {tokens.shape}, weights {weights.shape} and offsets {offsets[[0, -1]]} disagree")
        self.tokens = np.asarray(tokens, dtype=np.float32)  # float16 products would miss BLAS (50x slower)
        self.weights, self.offsets = weights, offsets
        self.index = np.arange(len(offsets) - 1) if index is None else np.asarray(index, dtype=np.int64)

    @classmethod
    def from_texts(cls, rows: list[tuple[np.ndarray, np.ndarray]], index: np.ndarray | None = None) -> TokenMatcher:
        """From each distinct text's (token embeddings (L, d), weights (L,)); the embeddings are L2-normalised here."""
        dims = rows[0][0].shape[1] if rows else 0
        tokens = np.concatenate([v for v, _ in rows]).astype(np.float32) if rows else np.zeros((0, dims))
        tokens = tokens / np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12)
        weights = np.concatenate([w for _, w in rows]) if rows else np.zeros(0)
        offsets = np.concatenate([[0], np.cumsum([len(w) for _, w in rows])]).astype(np.int64)
        return cls(tokens.astype(np.float16).astype(np.float32), weights.astype(np.float32), offsets, index)

    def __len__(self) -> int:
        return len(self.index)

    def text(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item i's token embeddings and weights."""
        t = self.index[i]
        span = slice(self.offsets[t], self.offsets[t + 1])
        return self.tokens[span], self.weights[span]

    def on_rows(self, rows: np.ndarray) -> TokenMatcher:
        """The matcher of a subset of the items (item i of the subset = item rows[i]); the token rows are shared."""
        return TokenMatcher(self.tokens, self.weights, self.offsets, self.index[np.asarray(rows, dtype=np.int64)])

    def _token_rows(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token rows of `items`, concatenated in that order, and each item's token count."""
        texts = self.index[items]
        lengths = np.diff(self.offsets)[texts]
        ends = np.cumsum(lengths)
        shift = np.repeat(self.offsets[texts] - (ends - lengths), lengths)
        return np.arange(int(ends[-1]) if len(ends) else 0) + shift, lengths

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """IDF-weighted BERTScore F of the item pairs (a[i], b[i]); recall and precision below 0 count as 0, and a
        text without tokens scores 0. One matrix product per distinct a against all of its partners' tokens."""
        from threadpoolctl import threadpool_limits

        out = np.zeros(len(a), dtype=np.float32)
        lengths = np.diff(self.offsets)[self.index]
        order = np.argsort(a, kind="stable")
        anchors, first, counts = np.unique(a[order], return_index=True, return_counts=True)
        halves = np.array_split(np.arange(len(anchors)), 2)
        with threadpool_limits(1), ThreadPoolExecutor(2) as pool:  # many small products: one BLAS thread each
            list(
                pool.map(lambda h: self._score_anchors(b, order, anchors[h], first[h], counts[h], lengths, out), halves)
            )
        return out

    def _score_anchors(self, b, order, anchors, first, counts, lengths, out) -> None:
        """Score the pairs of the given anchors into `out` (their pairs are order[first:first + count])."""
        for anchor, start, count in zip(anchors, first, counts):
            ta, wa = self.text(int(anchor))
            pairs = order[start : start + count]
            pairs = pairs[lengths[b[pairs]] > 0]
            if len(ta) == 0 or len(pairs) == 0:
                continue
            cols, spans = self._token_rows(b[pairs])
            starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
            sims = ta @ self.tokens[cols].T  # (len a, all partner tokens)
            recall = np.maximum.reduceat(sims, starts, axis=1).T @ wa / wa.sum()
            wb = self.weights[cols]
            precision = np.add.reduceat(sims.max(axis=0) * wb, starts) / np.add.reduceat(wb, starts)
            recall, precision = np.maximum(recall, 0), np.maximum(precision, 0)
            out[pairs] = 2 * recall * precision / np.maximum(recall + precision, 1e-9)


def token_matcher(embedder: Embedder, texts: list[str], *, max_tokens: int) -> TokenMatcher | None:
    """The token matcher of `texts` (their first `max_tokens` non-special tokens), each distinct text once; None
    unless `embedder` pools with IDF weights, whose document frequencies it reuses. The rows the embedder kept
    while embedding (`keep_tokens`) are reused; only the other texts go through a forward pass."""
    if not isinstance(embedder, IdfPooledEmbedder) or not texts:
        return None
    distinct = list(dict.fromkeys(texts))
    kept = embedder.kept_tokens or {}
    missing = [t for t in distinct if t not in kept]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with progress_bar("token embeddings", total=len(missing) if len(missing) > PROGRESS_MIN_TEXTS else 0) as advance:
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            for text, output in zip(chunk, embedder.encode(chunk), strict=True):
                found[text] = embedder.token_rows(output, max_tokens)
            advance(len(chunk))
    row_of = {t: i for i, t in enumerate(distinct)}
    rows = [found[t] if t in found else _capped(kept[t], max_tokens) for t in distinct]
    return TokenMatcher.from_texts(rows, np.array([row_of[t] for t in texts], dtype=np.int64))


def _capped(row: tuple[np.ndarray, np.ndarray], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    return row[0][:max_tokens], row[1][:max_tokens]
