"""IDF pooling: item vectors that weigh a mean-pooled encoder's rare tokens up.

Mean pooling gives every token the same weight, so the words that tell close intents apart ("pending",
"reverted", "cash") count no more than "my" or "the". The same forward pass also yields the token
embeddings; pooling them with the corpus's inverse document frequencies (to `idf_power`) brings those words
forward, and an item's vector becomes unit((1 - w)·mean + w·idf) with w = `idf_pooling`.

The document frequencies are fitted on the build's item texts and stored under their digest, which the
taxonomy's fingerprint records, so a refresh, an edit or the routing API pools new texts with the very
weights the taxonomy was built with. Only sentence-transformers models with mean pooling qualify
(MiniLM, mpnet); last-token models (Qwen3-Embedding) and HTTP backends keep their own vectors.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel

from clado.backends.embed import Embedder, EmbedSettings, SentenceTransformerEmbedder, mrl_truncate
from clado.taxonomy.records import sha256_text, stable_json
from clado.taxonomy.store import Store
from clado.vectors import unit

STAGE = "token_stats"


class TokenStats(BaseModel):
    """Document frequencies of token ids over a corpus of `docs` texts."""

    docs: int
    df: dict[int, int]

    def digest(self) -> str:
        """Short content hash: names the stats in the store, the fingerprint and cache keys."""
        return sha256_text(stable_json([self.docs, sorted(self.df.items())]))[:16]

    def weights(self, ids: np.ndarray, power: float) -> np.ndarray:
        """(log((docs + 1) / (df + 1)) + 1) ** power per token id; an unseen token counts as df = 0."""
        df = np.array([self.df.get(int(i), 0) for i in ids], dtype=np.float64)
        return (np.log((self.docs + 1) / (df + 1)) + 1.0) ** power


def supports_idf_pooling(embedder: Embedder) -> bool:
    """Whether `embedder` is an in-process sentence-transformers model that mean-pools its tokens."""
    if not isinstance(embedder, SentenceTransformerEmbedder):
        return False
    pooling = [m for m in embedder.model if type(m).__name__ == "Pooling"]
    return len(pooling) == 1 and (
        getattr(pooling[0], "pooling_mode", None) == "mean"
        or bool(getattr(pooling[0], "pooling_mode_mean_tokens", False))
    )


def fit_token_stats(texts: list[str], tokenizer: Any) -> TokenStats:
    """Document frequencies of the token ids of `texts` (special tokens excluded)."""
    special = set(tokenizer.all_special_ids)
    df: Counter[int] = Counter()
    for ids in tokenizer(texts, truncation=True)["input_ids"] if texts else []:
        df.update(set(ids) - special)
    return TokenStats(docs=len(texts), df=dict(df))


class IdfPooledEmbedder:
    """A mean-pooling sentence-transformers embedder whose rows mix in the IDF-pooled token embeddings."""

    def __init__(self, base: SentenceTransformerEmbedder, stats: TokenStats, *, weight: float, power: float):
        self.base, self.stats, self.weight, self.power = base, stats, weight, power
        self.special = set(base.model.tokenizer.all_special_ids)
        self.dimension = base.dimension
        self.model_id = f"{base.model_id}|idf_pooling={weight:g},power={power:g},stats={stats.digest()}"
        self.kept_tokens: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._keep_max_tokens = 0

    def keep_tokens(self, max_tokens: int) -> None:
        """From now on, `embed` also keeps each text's first `max_tokens` weighted token rows (float16) in
        `kept_tokens`, so token matching needs no second forward pass over the same texts."""
        self.kept_tokens = {} if self.kept_tokens is None else self.kept_tokens
        self._keep_max_tokens = max_tokens

    def token_rows(self, output: dict[str, Any], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """One text's first `max_tokens` non-special token embeddings (float16) and their IDF weights."""
        _, vectors, w = self.weighted_tokens(output)
        keep = np.flatnonzero(w > 0)[:max_tokens]
        return vectors[keep, : self.dimension].astype(np.float16), w[keep].astype(np.float32)

    def format(self, text: str) -> str:
        return self.base.format(text)

    def encode(self, texts: list[str]) -> list[dict[str, Any]]:
        """One forward pass: each text's sentence embedding, token embeddings, ids and attention mask."""
        return self.base.model.encode(
            [self.format(t) for t in texts],
            output_value=None,
            prompt="",
            batch_size=self.base.settings.batch_size,
            show_progress_bar=False,
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        outputs = self.encode(texts)
        if self.kept_tokens is not None:
            for text, output in zip(texts, outputs, strict=True):
                self.kept_tokens[text] = self.token_rows(output, self._keep_max_tokens)
        mean = unit(np.stack([o["sentence_embedding"].float().numpy() for o in outputs]))
        idf = mrl_truncate(np.stack([self._idf_pool(o) for o in outputs]), mean.shape[1])
        return unit((1.0 - self.weight) * mean + self.weight * idf)

    def weighted_tokens(self, output: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One text's token ids, token embeddings and IDF weights (padding left out; special tokens weigh 0)."""
        mask = output["attention_mask"].bool().numpy()
        ids = output["input_ids"].numpy()[mask]
        tokens = output["token_embeddings"].float().numpy()[mask]
        return ids, tokens, self.stats.weights(ids, self.power) * np.array([i not in self.special for i in ids])

    def _idf_pool(self, output: dict[str, Any]) -> np.ndarray:
        """The IDF-weighted mean of one text's token embeddings (padding and special tokens left out)."""
        _, tokens, w = self.weighted_tokens(output)
        if w.sum() <= 0:  # only special tokens: the plain mean
            return tokens.mean(axis=0)
        return (w[:, None] * tokens).sum(axis=0) / w.sum()


def fitted_item_embedder(
    embedder: Embedder, settings: EmbedSettings, store: Store | None, texts: list[str]
) -> Embedder:
    """The embedder for a build's item texts: IDF pooling fitted on `texts` (and kept in `store`, when given),
    when on and supported."""
    if settings.idf_pooling <= 0 or not supports_idf_pooling(embedder) or len(texts) < 2:
        return embedder
    assert isinstance(embedder, SentenceTransformerEmbedder)
    stats = fit_token_stats(texts, embedder.model.tokenizer)
    if store is not None:
        store.put_output(f"{STAGE}:{stats.digest()}", STAGE, stats.model_dump(mode="json"))
    return IdfPooledEmbedder(embedder, stats, weight=settings.idf_pooling, power=settings.idf_power)


def stored_item_embedder(embedder: Embedder, settings: EmbedSettings, store: Store, fingerprint: dict) -> Embedder:
    """The embedder for new item texts of a stored taxonomy: the IDF pooling its fingerprint names, if any.

    With IDF pooling off in `settings`, or stats missing, the plain embedder comes back; its `model_id` then
    differs from the fingerprint's `embed_model`, which the callers report as a change of embedding settings.
    """
    digest = fingerprint.get(STAGE)
    if digest is None or settings.idf_pooling <= 0 or not supports_idf_pooling(embedder):
        return embedder
    body = store.get_output(f"{STAGE}:{digest}")
    if body is None:
        return embedder
    assert isinstance(embedder, SentenceTransformerEmbedder)
    stats = TokenStats.model_validate(body)
    return IdfPooledEmbedder(embedder, stats, weight=settings.idf_pooling, power=settings.idf_power)


def token_stats_digest(embedder: Embedder) -> str | None:
    """What a taxonomy's fingerprint records under `token_stats`: the digest of the stats its items used."""
    return embedder.stats.digest() if isinstance(embedder, IdfPooledEmbedder) else None
