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

import numpy as np

from clado.backends.embed import PROGRESS_MIN_TEXTS, Embedder
from clado.backends.idf_pooling import IdfPooledEmbedder
from clado.progress import progress_bar

CHUNK = 512  # texts per forward pass between progress updates


class TokenMatcher:
    """The unit token embeddings of n texts, stored flat: text i owns rows offsets[i]:offsets[i + 1] of
    `tokens` (N, d) and `weights` (N,) (its tokens' IDF weights, all > 0)."""

    def __init__(self, tokens: np.ndarray, weights: np.ndarray, offsets: np.ndarray):
        if len(tokens) != len(weights) or offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) < 0).any():
            raise ValueError(f"tokens {tokens.shape}, weights {weights.shape} and offsets {offsets[[0, -1]]} disagree")
        self.tokens, self.weights, self.offsets = tokens, weights, offsets

    @classmethod
    def from_texts(cls, rows: list[tuple[np.ndarray, np.ndarray]]) -> TokenMatcher:
        """From each text's (token embeddings (L, d), weights (L,)); the embeddings are L2-normalised here."""
        dims = rows[0][0].shape[1] if rows else 0
        tokens = np.concatenate([v for v, _ in rows]) if rows else np.zeros((0, dims))
        tokens = tokens / np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12)
        weights = np.concatenate([w for _, w in rows]) if rows else np.zeros(0)
        offsets = np.concatenate([[0], np.cumsum([len(w) for _, w in rows])]).astype(np.int64)
        return cls(tokens.astype(np.float16), weights.astype(np.float32), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def text(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Text i's token embeddings and weights."""
        span = slice(self.offsets[i], self.offsets[i + 1])
        return self.tokens[span], self.weights[span]

    def _token_rows(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token rows of `texts`, concatenated in that order, and each text's token count."""
        lengths = np.diff(self.offsets)[texts]
        spans = [np.arange(self.offsets[t], self.offsets[t] + n) for t, n in zip(texts, lengths)]
        return (np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)), lengths

    def on_rows(self, rows: np.ndarray) -> TokenMatcher:
        """The matcher of a subset of the texts (text i of the subset = text rows[i])."""
        index, lengths = self._token_rows(np.asarray(rows, dtype=np.int64))
        return TokenMatcher(self.tokens[index], self.weights[index], np.concatenate([[0], np.cumsum(lengths)]))

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """IDF-weighted BERTScore F of the text pairs (a[i], b[i]); recall and precision below 0 count as 0, and a
        text without tokens scores 0. One matrix product per distinct a against all of its partners' tokens."""
        out = np.zeros(len(a), dtype=np.float32)
        lengths = np.diff(self.offsets)
        order = np.argsort(a, kind="stable")
        anchors, first, counts = np.unique(a[order], return_index=True, return_counts=True)
        for anchor, start, count in zip(anchors, first, counts):
            ta, wa = self.text(int(anchor))
            pairs = order[start : start + count]
            pairs = pairs[lengths[b[pairs]] > 0]
            if len(ta) == 0 or len(pairs) == 0:
                continue
            cols, spans = self._token_rows(b[pairs])
            starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
            sims = ta.astype(np.float32) @ self.tokens[cols].astype(np.float32).T  # (len a, all partner tokens)
            recall = np.maximum.reduceat(sims, starts, axis=1).T @ wa / wa.sum()
            wb = self.weights[cols]
            precision = np.add.reduceat(sims.max(axis=0) * wb, starts) / np.add.reduceat(wb, starts)
            recall, precision = np.maximum(recall, 0), np.maximum(precision, 0)
            out[pairs] = 2 * recall * precision / np.maximum(recall + precision, 1e-9)
        return out


def token_matcher(embedder: Embedder, texts: list[str], *, max_tokens: int) -> TokenMatcher | None:
    """The token matcher of `texts` (their first `max_tokens` non-special tokens); None unless `embedder`
    pools with IDF weights, whose forward pass and document frequencies it reuses."""
    if not isinstance(embedder, IdfPooledEmbedder) or not texts:
        return None
    rows = []
    with progress_bar("token embeddings", total=len(texts) if len(texts) > PROGRESS_MIN_TEXTS else 0) as advance:
        for start in range(0, len(texts), CHUNK):
            for output in embedder.encode(texts[start : start + CHUNK]):
                _, vectors, w = embedder.weighted_tokens(output)
                keep = np.flatnonzero(w > 0)[:max_tokens]
                rows.append((vectors[keep, : embedder.dimension], w[keep]))
            advance(len(texts[start : start + CHUNK]))
    return TokenMatcher.from_texts(rows)
