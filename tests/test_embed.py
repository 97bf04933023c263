from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from clado.backends.embed import (
    FIELD_LABELS,
    EmbedSettings,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    cache_key,
    clustering_text,
    combine,
    embed_cached,
    field_lines,
    format_query,
    mrl_truncate,
    qwen3_query,
    resolve_model_path,
    resolve_prompt_format,
    without_field_labels,
)
from tests.fakes import FakeEmbedder
from tests.local_server import json_server
from tests.tiny_models import build_tiny_qwen3

TASK = "Identify the topic or theme of the given text for clustering"
TEXTS = ["my card was declined", "refund my order please", "yes"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3-embedding"))


def manual_last_token(folder: Path, text: str) -> np.ndarray:
    """What Qwen3-Embedding does by hand: tokenizer appends EOS, take the last hidden state, normalise."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    encoded = tokenizer([text], return_tensors="pt")
    assert encoded.input_ids[0, -1].item() == tokenizer.eos_token_id
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state[0, -1].numpy()
    return hidden / np.linalg.norm(hidden)


# ---------------------------------------------------------------- formats


def test_qwen3_query_format_is_exact():
    expected = "Instruct: Find the topic\nQuery:my card {x} was declined"
    assert qwen3_query("Find the topic", "my card {x} was declined") == expected


def test_custom_format_and_validation():
    assert format_query("<{task}> {text} </{task}>", task="t", text="x") == "<t> x </t>"
    settings = EmbedSettings(instruction_format="task: {task} | {text}")
    assert resolve_prompt_format(settings, instruction_aware=False) == "task: {task} | {text}"
    with pytest.raises(ValueError, match="text"):
        resolve_prompt_format(EmbedSettings(instruction_format="no placeholder"), instruction_aware=True)


def test_auto_format_only_for_instruction_aware_models():
    assert resolve_prompt_format(EmbedSettings(), instruction_aware=True) == "Instruct: {task}\nQuery:{text}"
    assert resolve_prompt_format(EmbedSettings(), instruction_aware=False) is None
    assert resolve_prompt_format(EmbedSettings(instruction=None), instruction_aware=True) is None
    assert resolve_prompt_format(EmbedSettings(instruction=""), instruction_aware=True) is None
    assert resolve_prompt_format(EmbedSettings(instruction_format="none"), instruction_aware=True) is None


def test_clustering_text_omits_absent_lines():
    assert clustering_text(aspect="Billing", issue="double charge", context="EU store") == (
        "Aspect: Billing\nIssue: double charge\nContext: EU store"
    )
    assert clustering_text(aspect=None, issue="double charge") == "Issue: double charge"


def test_every_facet_line_label_is_stripped_for_keywords_and_unknown_labels_are_refused():
    """Keywords strip the labels `field_lines` writes; a label it does not know would top every cluster."""
    text = field_lines(*((label, "x") for label in FIELD_LABELS))
    assert without_field_labels(text).split("\n") == ["x"] * len(FIELD_LABELS)
    assert field_lines(("Request", "a"), ("Task", None)) == "Request: a"
    with pytest.raises(ValueError, match="Summary"):
        field_lines(("Summary", "x"))


# ---------------------------------------------------------------- vectors


def test_mrl_truncate_keeps_first_dims_and_renormalises():
    X = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 5.0]])
    out = mrl_truncate(X, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(mrl_truncate(X, None), X / np.linalg.norm(X, axis=1, keepdims=True), atol=1e-7)
    with pytest.raises(ValueError, match="exceeds"):
        mrl_truncate(X, 4)


def test_combine_weights_cosines_by_squared_weights():
    rng = np.random.default_rng(0)
    issue = mrl_truncate(rng.normal(size=(2, 8)), None)
    aspect = mrl_truncate(rng.normal(size=(2, 5)), None)
    C = combine(issue, aspect, w_issue=0.8, w_aspect=0.2)
    assert C.shape == (2, 13)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-6)
    expected = (0.64 * issue[0] @ issue[1] + 0.04 * aspect[0] @ aspect[1]) / 0.68
    assert C[0] @ C[1] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):
        combine(issue, aspect[:1])


# ---------------------------------------------------------------- sentence-transformers backend


def test_tiny_qwen3_last_token_pooling_with_instruction(tiny_model: Path):
    embedder = SentenceTransformerEmbedder(EmbedSettings(model=str(tiny_model), instruction=TASK))
    # auto: the saved `Instruct:` prompt marks the model as instruction-aware
    assert embedder.format("my card was declined") == f"Instruct: {TASK}\nQuery:my card was declined"
    X = embedder.embed(TEXTS)
    assert X.shape == (3, 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # batched (left-padded) output equals the hand-computed last-token state of each formatted text
    for text, row in zip(TEXTS, X, strict=True):
        np.testing.assert_allclose(row, manual_last_token(tiny_model, qwen3_query(TASK, text)), atol=1e-4)


def test_tiny_qwen3_instruction_changes_vector_and_model_id(tiny_model: Path):
    with_instruction = SentenceTransformerEmbedder(EmbedSettings(model=str(tiny_model), instruction=TASK))
    without = SentenceTransformerEmbedder(EmbedSettings(model=str(tiny_model), instruction=None))
    assert without.format("refund") == "refund"
    a, b = with_instruction.embed(["refund"])[0], without.embed(["refund"])[0]
    assert not np.allclose(a, b, atol=1e-3)
    np.testing.assert_allclose(b, manual_last_token(tiny_model, "refund"), atol=1e-4)
    assert with_instruction.model_id != without.model_id


def test_tiny_qwen3_mrl_truncation(tiny_model: Path):
    full = SentenceTransformerEmbedder(EmbedSettings(model=str(tiny_model), instruction=TASK)).embed(TEXTS)
    cut = SentenceTransformerEmbedder(EmbedSettings(model=str(tiny_model), instruction=TASK, dims=8))
    X = cut.embed(TEXTS)
    assert X.shape == (3, 8)
    np.testing.assert_allclose(X, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-5)
    assert "dims=8" in cut.model_id


def test_bundled_minilm_is_resolved_and_gets_no_instruction():
    folder = Path(resolve_model_path("all-MiniLM-L6-v2"))
    assert (folder / "modules.json").is_file()
    assert resolve_model_path("/some/local/model") == "/some/local/model"
    embedder = SentenceTransformerEmbedder(EmbedSettings())
    assert embedder.format("refund my order") == "refund my order"
    X = embedder.embed(["refund my order", "get my money back", "the weather is nice"])
    assert X.shape == (3, 384)
    assert X[0] @ X[1] > X[0] @ X[2]


# ---------------------------------------------------------------- OpenAI-compatible backend


def raw_vector(text: str) -> list[float]:
    """Deterministic, unnormalised, 6-d; the fake server ignores `dimensions` like some real servers."""
    return [float(len(text)), 1.0, float(ord(text[0]) % 7), 2.0, float(text.count(" ")), 3.0]


def test_openai_embedder_batches_sends_dimensions_and_renormalises():
    failures = {"left": 1}

    def respond(path: str, body: dict) -> tuple[int, dict]:
        if failures["left"]:
            failures["left"] -= 1
            return 503, {"error": {"message": "loading"}}
        data = [{"object": "embedding", "index": i, "embedding": raw_vector(t)} for i, t in enumerate(body["input"])]
        return 200, {"object": "list", "model": body["model"], "data": data[::-1], "usage": {}}

    texts = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta"]
    with json_server(respond) as server:
        settings = EmbedSettings(
            backend="openai",
            model="Qwen3-Embedding-0.6B",
            base_url=f"{server.url}/v1",
            instruction=TASK,
            dims=4,
            batch_size=2,
        )
        X = OpenAIEmbedder(settings).embed(texts)
    bodies = server.bodies("/v1/embeddings")
    assert len(bodies) == 4  # one 503 retried, then 3 batches
    assert [len(b["input"]) for b in bodies[1:]] == [2, 2, 1]
    assert all(b["dimensions"] == 4 and b["encoding_format"] == "float" for b in bodies)
    assert bodies[1]["input"][0] == qwen3_query(TASK, "alpha beta")
    expected = mrl_truncate(np.array([raw_vector(qwen3_query(TASK, t)) for t in texts]), 4)
    np.testing.assert_allclose(X, expected, atol=1e-6)


def test_openai_embedder_does_not_retry_client_errors():
    with json_server(lambda path, body: (400, {"error": {"message": "bad dimensions"}})) as server:
        settings = EmbedSettings(backend="openai", model="m", base_url=f"{server.url}/v1")
        with pytest.raises(openai.BadRequestError):
            OpenAIEmbedder(settings).embed(["x"])
    assert len(server.requests) == 1
    assert server.requests[0][1]["input"] == ["x"]  # not instruction-aware: raw text, no `dimensions`
    assert "dimensions" not in server.requests[0][1]


# ---------------------------------------------------------------- cache


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, np.ndarray] = {}

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        return {k: self.data[k] for k in keys if k in self.data}

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self.data.update(items)


def test_embed_cached_embeds_only_missing_texts_once():
    embedder, cache = FakeEmbedder(), DictCache()
    first = embed_cached(["card declined", "refund order", "card declined"], embedder=embedder, cache=cache)
    assert embedder.texts_embedded == 2  # the duplicate is embedded once
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first, embedder.embed(["card declined", "refund order", "card declined"]))
    embedder.texts_embedded = 0

    texts = ["refund order", "late delivery", "card declined"]
    second = embed_cached(texts, embedder=embedder, cache=cache)
    assert embedder.texts_embedded == 1  # only "late delivery"
    np.testing.assert_array_equal(second, FakeEmbedder().embed(texts))
    distinct = ["card declined", "refund order", "late delivery"]
    assert set(cache.data) == {cache_key(embedder.model_id, t) for t in distinct}

    before = embedder.calls
    again = embed_cached(texts, embedder=embedder, cache=cache)
    assert embedder.calls == before
    np.testing.assert_array_equal(again, second)


def test_embed_cached_without_cache_and_chunking():
    embedder = FakeEmbedder()
    texts = [f"text number {i}" for i in range(7)]
    X = embed_cached(texts, embedder=embedder, cache=None, chunk_size=3)
    assert embedder.calls == 3 and X.shape == (7, 64)
    assert embed_cached([], embedder=embedder, cache=None).shape[0] == 0


def test_cache_key_depends_on_model_identity():
    assert cache_key("a|dims=8", "x") != cache_key("a", "x")
    assert cache_key("a", "x") == cache_key("a", "x")
