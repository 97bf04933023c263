"""Pairwise yes/no scores: does a document belong with (match) a query?

Backends behind one `Reranker` protocol: a Qwen3-Reranker-style causal LM in process
(P("yes") from the yes/no logits at the last position) and vLLM's `/score` endpoint.
`p_yes_from_top_logprobs` turns the top log-probabilities of any served chat model into
the same probability (for an LLM judge). `knn_candidate_pairs` picks which pairs to score.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from clado.prompts import render
from clado.prompts.quoting import neutralise_tags


class RerankSettings(BaseModel):
    """Which pair reranker checks refinement (and builds rerank_leiden's graph), and how much it may score."""

    model_config = ConfigDict(extra="forbid")
    reranker: Literal["none", "llm_judge", "qwen3", "vllm_score"] = Field(
        "none",
        description="Pair reranker for refinement: llm_judge = yes/no judge through the build's LLM (logprobs), "
        "qwen3 = Qwen3-Reranker in process (reranker_model is its folder), vllm_score = vLLM /score "
        "(reranker_url and reranker_model)",
    )
    reranker_model: str | None = Field(None, description="Reranker model folder (qwen3) or served name (vllm_score)")
    reranker_url: str | None = Field(
        None, description="Base URL of the vLLM server for vllm_score, e.g. http://host:8000/v1"
    )
    rerank_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A reranker score at or above this confirms a pairing (calibrate it on labelled pairs)",
    )
    rerank_budget: int = Field(2000, ge=0, description="Most item pairs the reranker scores in one build")
    rerank_knn_k: int = Field(
        10, ge=1, le=1000, description="rerank_leiden: candidate pairs are each item's k nearest neighbours"
    )
    rerank_top_m: int = Field(
        10,
        ge=1,
        le=1000,
        description="rerank_leiden: edges kept per item (its highest scores at or above the threshold)",
    )


class Reranker(Protocol):
    """Scores (query, document) pairs with the probability that the document matches the query."""

    model_id: str

    def score_pairs(self, pairs: list[tuple[str, str]], *, instruction: str | None = None) -> list[float]: ...


# ---------------------------------------------------------------- prompt


def qwen3_rerank_query(instruction: str | None, query: str) -> str:
    """First half of the Qwen3-Reranker prompt: system turn, user turn up to `<Query>: …\\n` (query neutralised)."""
    return render("qwen3_reranker_query", strip=False, instruction=instruction, query=neutralise_tags(query))


def qwen3_rerank_document(document: str) -> str:
    """Second half: `<Document>: …`, end of the user turn and the assistant turn with an empty think block."""
    return render("qwen3_reranker_document", strip=False, document=neutralise_tags(document))


def qwen3_rerank_prompt(instruction: str | None, query: str, document: str) -> str:
    """The whole Qwen3-Reranker prompt (None `instruction` = the template's default); user text cannot write
    a chat control token (`neutralise_tags`)."""
    return render(
        "qwen3_reranker", strip=False, instruction=instruction, query=neutralise_tags(query),
        document=neutralise_tags(document),
    )  # fmt: skip


# ---------------------------------------------------------------- probabilities


def yes_probability(yes_logit: float, no_logit: float) -> float:
    """Softmax over the two logits: P(yes) = 1 / (1 + exp(no - yes))."""
    diff = no_logit - yes_logit
    if diff > 0:
        z = math.exp(-diff)
        return z / (1.0 + z)
    return 1.0 / (1.0 + math.exp(diff))


def _answer_word(token: str) -> str | None:
    word = token.strip().lower()
    return word if word in ("yes", "no") else None


def p_yes_from_top_logprobs(top: dict[str, float]) -> float:
    """P(yes) among yes/no from a top-k logprob table; "yes", " Yes", "YES"… are summed, likewise "no".

    Neither present: 0.5. Only one present: the other is taken at the smallest logprob listed
    (it ranked below everything shown).
    """
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in top.items():
        word = _answer_word(token)
        if word:
            mass[word] += math.exp(logprob)
    if mass["yes"] == 0.0 and mass["no"] == 0.0:
        return 0.5
    floor = math.exp(min(top.values()))
    yes = mass["yes"] or floor
    no = mass["no"] or floor
    return yes / (yes + no)


# ---------------------------------------------------------------- backends


class Qwen3Reranker:
    """A Qwen3-Reranker (or any causal LM with "yes"/"no" tokens) run in process with transformers."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 8, max_length: int = 8192):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
        self.yes_id = self._token_id("yes")
        self.no_id = self._token_id("no")
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_id = f"qwen3-reranker:{model_path}"

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the reranker's tokenizer has no single token {token!r}")
        return int(token_id)

    def _length(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt(self, query: str, document: str, *, instruction: str | None = None) -> str:
        """The prompt for one pair, with the (neutralised) document cut by tokens to fit `max_length`."""
        document = neutralise_tags(document)
        text = qwen3_rerank_prompt(instruction, query, document)
        excess = self._length(text) - self.max_length
        if excess <= 0:
            return text
        doc_ids = self.tokenizer(document, add_special_tokens=False).input_ids
        keep = len(doc_ids) - excess - 8  # margin: decoding then re-encoding may merge tokens differently
        if keep <= 0:
            raise ValueError(f"instruction and query alone exceed max_length={self.max_length} tokens")
        return qwen3_rerank_prompt(instruction, query, self.tokenizer.decode(doc_ids[:keep]))

    def yes_no_logits(self, texts: list[str]) -> np.ndarray:
        """Logits of "yes" and "no" at the last position of each full prompt, shape (n, 2)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    add_special_tokens=False,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**batch).logits[:, -1, :]
                out.append(logits[:, [self.yes_id, self.no_id]].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)

    def score_pairs(self, pairs: list[tuple[str, str]], *, instruction: str | None = None) -> list[float]:
        texts = [self.prompt(q, d, instruction=instruction) for q, d in pairs]
        return [yes_probability(float(yes), float(no)) for yes, no in self.yes_no_logits(texts)]


def _retryable_http(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):  # connection errors and timeouts
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500
    )


class VLLMScoreReranker:
    """vLLM's score API: `POST {base_url}/score` with `text_1` (queries) and `text_2` (documents) paired.

    `prompt_format="qwen3"` sends the two halves of the Qwen3-Reranker prompt (vLLM serving the
    original Qwen3-Reranker as a sequence classifier, as in vLLM's example); `"raw"` sends the texts
    unchanged (a cross-encoder, or a server started with a score template), with `instruction`
    passed through as a request field.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        prompt_format: Literal["qwen3", "raw"] = "qwen3",
        batch_size: int = 32,
        timeout: float = 120.0,
        max_attempts: int = 5,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model = model
        self.prompt_format = prompt_format
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.model_id = f"vllm-score:{model}:{prompt_format}"

    def close(self) -> None:
        self.client.close()

    def _post(self, body: dict[str, Any]) -> list[float]:
        for attempt in Retrying(
            retry=retry_if_exception(_retryable_http),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=0.5, max=10),
            reraise=True,
        ):
            with attempt:
                response = self.client.post("/score", json=body)
                response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        if len(data) != len(body["text_1"]):
            raise RuntimeError(f"score server returned {len(data)} scores for {len(body['text_1'])} pairs")
        return [float(d["score"]) for d in data]

    def score_pairs(self, pairs: list[tuple[str, str]], *, instruction: str | None = None) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            body: dict[str, Any] = {"model": self.model}
            if self.prompt_format == "qwen3":
                body["text_1"] = [qwen3_rerank_query(instruction, q) for q, _ in batch]
                body["text_2"] = [qwen3_rerank_document(d) for _, d in batch]
            else:
                body["text_1"] = [q for q, _ in batch]
                body["text_2"] = [d for _, d in batch]
                if instruction:
                    body["instruction"] = instruction
            scores.extend(self._post(body))
        return scores


# ---------------------------------------------------------------- candidates


def knn_candidate_pairs(X: np.ndarray, *, k: int = 10, budget: int = 5000, block: int = 512) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, where one is among the other's `k` most cosine-similar rows.

    Deduplicated, most similar first (ties by index), at most `budget` pairs. Rows are compared
    block by block, so memory stays O(block · n), never n².
    """
    n = len(X)
    k = min(k, n - 1)
    if k <= 0 or budget <= 0:
        return []
    Xn = np.asarray(X, dtype=np.float32)
    Xn = Xn / np.maximum(np.linalg.norm(Xn, axis=1, keepdims=True), 1e-12)
    best: dict[tuple[int, int], float] = {}
    for start in range(0, n, block):
        S = Xn[start : start + block] @ Xn.T
        rows = np.arange(len(S))
        S[rows, start + rows] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        for r, neighbours in enumerate(top):
            i = start + r
            for j in neighbours.tolist():
                pair = (i, j) if i < j else (j, i)
                best[pair] = float(S[r, j])
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return [pair for pair, _ in ranked[:budget]]
