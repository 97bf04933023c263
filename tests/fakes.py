"""Small fakes for unit tests: an OpenAI-compatible server behind httpx.MockTransport, and a fake embedder."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from clado.backends.llm import LLMClient, LLMSettings

Answer = str | dict | list | Exception | httpx.Response


class FakeServer:
    """Answers chat completions from a queue (or a responder) and records every request in `history`."""

    def __init__(self, answers: list[Answer] | None = None, responder: Callable[[dict], Answer] | None = None):
        self.queue: deque[Answer] = deque(answers or [])
        self.responder = responder
        self.history: list[dict[str, Any]] = []

    def enqueue(self, *answers: Answer) -> None:
        self.queue.extend(answers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.history.append(body)
        answer = self.queue.popleft() if self.queue else self.responder(body) if self.responder else None
        if answer is None:
            raise AssertionError(f"FakeServer has no answer queued for request {len(self.history)}")
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        content = answer if isinstance(answer, str) else json.dumps(answer)
        return httpx.Response(200, json=completion(content))

    def user_prompts(self) -> list[str]:
        return [m["content"] for body in self.history for m in body["messages"] if m["role"] == "user"]


def completion(content: str, logprobs: dict[str, float] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in logprobs.items()]
        first = top[0]
        choice["logprobs"] = {
            "content": [{"token": first["token"], "logprob": first["logprob"], "bytes": None, "top_logprobs": top}]
        }
    return {
        "id": "fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def fake_llm(server: FakeServer, *, store=None, seed: int = 0, **settings: Any) -> LLMClient:
    """An LLMClient wired to `server` (no network), fast retries, sending sampling seed `seed`."""
    base = {
        "base_url": "http://fake.invalid/v1",
        "model": "fake-model",
        "schema_dialect": "json_object",
        "max_retries": 3,
    }
    transport = httpx.MockTransport(server.handle)
    client = LLMClient(
        LLMSettings(**(base | settings)), seed=seed, store=store, http_client=httpx.AsyncClient(transport=transport)
    )
    return client


class FakeEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are close. Counts its calls."""

    model_id = "fake-embedder"

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.calls = 0
        self.texts_embedded = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                word = word.strip(".,:;!?\"'()")
                if len(word) > 2:
                    out[i, hash_word(word) % self.dim] += 1.0
            out[i, -1] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def hash_word(word: str) -> int:
    """A hash that does not change between processes (unlike hash())."""
    value = 0
    for ch in word:
        value = (value * 131 + ord(ch)) % 1_000_003
    return value


def schema_answer(schema, prompt):
    """A schema-shaped answer whose strings depend on the prompt only (stable across processes)."""
    defs = schema.get("$defs", {})
    tag = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 997

    def fill(s, depth=0):
        if "$ref" in s:
            return fill(defs[s["$ref"].split("/")[-1]], depth)
        kind = s.get("type")
        if kind == "object":
            return {k: fill(v, depth + 1) for k, v in s.get("properties", {}).items()}
        if kind == "array":
            return [fill(s["items"], depth + 1) for _ in range(max(1, s.get("minItems", 1)))]
        if kind == "integer":
            return 0
        if kind == "boolean":
            return False
        if "enum" in s:
            return s["enum"][0]
        return f"Topic {tag} item {depth}"

    return fill(schema)
