"""IDF pooling of MiniLM's token embeddings: weights, the pooled vectors, and the stats a taxonomy keeps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from clado.backends.embed import EmbedSettings, SentenceTransformerEmbedder
from clado.backends.idf_pooling import (
    IdfPooledEmbedder,
    TokenStats,
    fit_token_stats,
    fitted_item_embedder,
    stored_item_embedder,
    supports_idf_pooling,
)
from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.classify import RoutingIndex
from clado.pipeline.refresh import RefreshError, refresh_async, taxonomy_items
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder
from tests.tiny_models import build_tiny_qwen3

CORPUS = [
    "my top up is still pending",
    "the top up was reverted",
    "why is my top up pending for so long",
    "my card payment was reverted",
    "card payment still pending",
    "how do I order a new card",
]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedSettings())


def test_weights_grow_as_tokens_get_rarer():
    stats = TokenStats(docs=10, df={1: 10, 2: 5, 3: 1})
    w = stats.weights(np.array([1, 2, 3, 4]), power=1.0)
    assert w[0] < w[1] < w[2] < w[3]  # 4 is unseen: the rarest of all
    assert w[0] == pytest.approx(np.log(11 / 11) + 1)
    np.testing.assert_allclose(stats.weights(np.array([1, 2, 3]), power=0.0), 1.0)
    np.testing.assert_allclose(
        stats.weights(np.array([3]), power=0.5), np.sqrt(stats.weights(np.array([3]), power=1.0))
    )


def test_stats_count_documents_not_occurrences_and_skip_special_tokens(minilm):
    tokenizer = minilm.model.tokenizer
    stats = fit_token_stats(["card card card", "card", "pending"], tokenizer)
    card, pending = tokenizer.convert_tokens_to_ids(["card", "pending"])
    assert stats.docs == 3 and stats.df[card] == 2 and stats.df[pending] == 1
    assert not set(stats.df) & set(tokenizer.all_special_ids)
    assert stats.digest() == fit_token_stats(["card card card", "card", "pending"], tokenizer).digest()
    assert stats.digest() != fit_token_stats(["card", "pending", "pending"], tokenizer).digest()


def test_weight_zero_is_the_plain_model_and_weight_one_the_idf_mean(minilm):
    stats = fit_token_stats(CORPUS, minilm.model.tokenizer)
    plain = IdfPooledEmbedder(minilm, stats, weight=0.0, power=0.5).embed(CORPUS)
    np.testing.assert_allclose(plain, minilm.embed(CORPUS), atol=1e-5)

    pooled = IdfPooledEmbedder(minilm, stats, weight=1.0, power=0.5).embed(CORPUS)
    special = set(minilm.model.tokenizer.all_special_ids)
    tokens = minilm.model.encode(CORPUS, output_value="token_embeddings", convert_to_numpy=False)
    for text, row, emb in zip(CORPUS, pooled, tokens):
        ids = np.array(minilm.model.tokenizer(text)["input_ids"])
        w = stats.weights(ids, 0.5) * np.array([i not in special for i in ids])
        expected = (w[:, None] * emb.numpy()[: len(ids)]).sum(axis=0)
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), atol=1e-5)
    assert not np.allclose(pooled, plain, atol=1e-3)


def test_rows_are_unit_and_do_not_depend_on_the_batch(minilm):
    embedder = IdfPooledEmbedder(minilm, fit_token_stats(CORPUS, minilm.model.tokenizer), weight=0.5, power=0.5)
    alone = embedder.embed(CORPUS[:1])
    batched = embedder.embed(CORPUS[:1] + ["a much longer text that pads the first one " * 5])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
    rows = embedder.embed(CORPUS)
    assert rows.dtype == np.float32 and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_rare_words_weigh_more_than_under_mean_pooling(minilm):
    """The word that sets two near-identical texts apart pulls them further apart once rare tokens weigh more."""
    stats = fit_token_stats(CORPUS, minilm.model.tokenizer)
    pending, reverted = "my top up is still pending", "the top up was reverted"
    plain = minilm.embed([pending, reverted])
    pooled = IdfPooledEmbedder(minilm, stats, weight=1.0, power=1.0).embed([pending, reverted])
    assert pooled[0] @ pooled[1] < plain[0] @ plain[1]


def test_mrl_dims_apply_to_both_parts():
    embedder = SentenceTransformerEmbedder(EmbedSettings(dims=128))
    rows = IdfPooledEmbedder(embedder, fit_token_stats(CORPUS, embedder.model.tokenizer), weight=0.5, power=0.5).embed(
        CORPUS
    )
    assert rows.shape == (len(CORPUS), 128) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_only_mean_pooling_sentence_transformers_models_qualify(minilm, tmp_path):
    assert supports_idf_pooling(minilm)
    assert not supports_idf_pooling(FakeEmbedder())
    last_token = SentenceTransformerEmbedder(EmbedSettings(model=str(build_tiny_qwen3(tmp_path / "qwen3"))))
    assert not supports_idf_pooling(last_token)


def test_model_id_names_weight_power_and_stats(minilm):
    stats = fit_token_stats(CORPUS, minilm.model.tokenizer)
    ids = {
        IdfPooledEmbedder(minilm, stats, weight=0.5, power=0.5).model_id,
        IdfPooledEmbedder(minilm, stats, weight=0.4, power=0.5).model_id,
        IdfPooledEmbedder(minilm, stats, weight=0.5, power=1.0).model_id,
        IdfPooledEmbedder(minilm, fit_token_stats(CORPUS[:3], minilm.model.tokenizer), weight=0.5, power=0.5).model_id,
    }
    assert len(ids) == 4 and all(i.startswith(minilm.model_id + "|") for i in ids)


def test_stats_are_stored_and_found_again_by_the_fingerprint(minilm, tmp_path):
    settings = EmbedSettings()
    with Store(tmp_path / "clado.db") as store:
        fitted = fitted_item_embedder(minilm, settings, store, CORPUS)
        assert isinstance(fitted, IdfPooledEmbedder)
        fingerprint = {"token_stats": fitted.stats.digest()}
        again = stored_item_embedder(minilm, settings, store, fingerprint)
        assert again.model_id == fitted.model_id
        np.testing.assert_allclose(again.embed(CORPUS), fitted.embed(CORPUS), atol=1e-6)
        # off, unsupported, or a taxonomy built without it: the plain embedder
        off = EmbedSettings(idf_pooling=0)
        assert fitted_item_embedder(minilm, off, store, CORPUS) is minilm
        assert stored_item_embedder(minilm, off, store, fingerprint) is minilm
        assert fitted_item_embedder(FakeEmbedder(), settings, store, CORPUS).model_id == FakeEmbedder().model_id
        assert stored_item_embedder(minilm, settings, store, {}) is minilm
        assert stored_item_embedder(minilm, settings, store, {"token_stats": "0" * 16}) is minilm


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


REVIEWS = [
    "battery dies after two hours", "the battery drains overnight", "battery life is poor",
    "battery barely lasts a day", "charging takes forever", "the charger stopped working",
    "screen cracked after a drop", "the screen flickers", "dead pixels on the screen",
    "screen is too dim outdoors", "strap broke in a week", "the strap clasp is flimsy",
]  # fmt: skip


def test_build_refresh_and_routing_use_the_builds_stats(minilm, tmp_path):
    """A no-LLM build records its stats; a refresh and the routing API embed new texts with them."""
    config = Config()
    config.output.map = False
    out = tmp_path / "out"

    async def run(settings: EmbedSettings):
        cfg = config.model_copy(update={"embed": settings})
        with Store(out / "clado.db") as store:
            built = await build_async(
                [write_jsonl(tmp_path / "first.jsonl", REVIEWS)], out=out, config=cfg, store=store, embedder=minilm,
                llm=None, no_llm=True,
            )  # fmt: skip
            new = write_jsonl(tmp_path / "more.jsonl", ["battery drains too fast", "the screen has a dead pixel"])
            refreshed = await refresh_async([new], out=out, config=cfg, store=store, embedder=minilm, llm=None)
            index = RoutingIndex.from_store(store, embedder=minilm, query_template="{text}", embed=settings)
            records = {r.id: r for r in store.records()}
            reloaded = taxonomy_items(store, built.taxonomy, embedder=index.embedder, records=records)
            return built, refreshed, index, reloaded

    built, refreshed, index, reloaded = asyncio.run(run(EmbedSettings()))
    digest = built.taxonomy.fingerprint["token_stats"]
    assert digest and built.taxonomy.fingerprint["embed_model"].endswith(f"stats={digest}")
    assert refreshed.taxonomy.fingerprint["token_stats"] == digest
    assert refreshed.summary["items_new"] == 2
    built_rows = dict(zip(built.items, built.vectors))
    for value, vector in zip(reloaded.values, reloaded.vectors):
        np.testing.assert_allclose(vector, built_rows[value.item_id], atol=1e-6)
    assert index.embedder.model_id == built.taxonomy.fingerprint["embed_model"]

    with Store(out / "clado.db") as store, pytest.raises(RefreshError, match="same embedding settings"):
        asyncio.run(
            refresh_async([], out=out, config=config.model_copy(update={"embed": EmbedSettings(idf_pooling=0.3)}),
                          store=store, embedder=minilm, llm=None)
        )  # fmt: skip
