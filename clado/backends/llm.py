"""The one LLM client: OpenAI-compatible, bounded concurrency, retries, schema-validated output, cached."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from clado.backends.llm_errors import (
    CONFIG_STATUS,
    CircuitBreaker,
    DeadlineExceeded,
    InvalidOutput,
    LLMFatal,
    TransientError,
    config_error,
    connection_refused,
    endpoint_fault,
    is_transient,
    unreachable_error,
)
from clado.prompts import render
from clado.redact import SECRET
from clado.taxonomy.records import sha256_text, stable_json
from clado.taxonomy.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
Dialect = Literal["json_schema", "json_object"]


class LLMSettings(BaseModel):
    """How to reach the chat model. With no `base_url`, clado starts its embedded llama.cpp server."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | list[str] | None = Field(
        None,
        description="OpenAI-compatible base URL, e.g. http://gpu-box:8000/v1, or a list of them (a fleet serving the "
        "same model): each request goes to the endpoint with the fewest requests in flight, and an endpoint that "
        "fails is left out for `endpoint_cooldown` seconds",
    )
    model: str | None = Field(
        None, description="Model name sent to the server (the embedded server's model by default)"
    )
    api_key: str = Field(
        "not-needed",
        description="Bearer token; the CLADO_LLM_API_KEY environment variable overrides it; never stored",
        json_schema_extra=SECRET,
    )
    local_model: str = Field(
        "default", description="Embedded GGUF when no base_url: default (1.5B), small (0.5B) or a .gguf path"
    )
    n_ctx: int = Field(4096, ge=256, description="Context window of the embedded server, also the prompt budget")
    schema_dialect: Literal["auto", "json_schema", "json_object"] = Field(
        "auto", description="Structured-output dialect: OpenAI json_schema (vLLM), llama.cpp json_object, or probe"
    )
    max_concurrency: int = Field(4, ge=1, le=1024, description="Requests in flight at once, per endpoint")
    endpoint_cooldown: float = Field(
        30.0, gt=0, le=3600, description="Seconds a failing endpoint of the list is left out before it is tried again"
    )
    timeout: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Seconds one request may take in all (connecting, queueing at the server, reading the answer) "
        "before it is abandoned and retried",
    )
    max_retries: int = Field(
        4, ge=0, le=20, description="Retries on timeouts, 5xx, connection errors and malformed bodies"
    )
    breaker_failures: int = Field(
        10,
        ge=1,
        le=10000,
        description="Failed requests in a row, over all endpoints and retries included, that stop the stage "
        "(the server is down or hung)",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = deterministic)")
    max_tokens: int = Field(512, ge=1, description="Default completion budget")

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        """Each URL is http(s); a list names at least one server."""
        urls = endpoint_urls(value)
        if isinstance(value, list) and not urls:
            raise ValueError("an empty list names no server: give at least one URL, or leave base_url unset")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value


INVALID_MARK = "invalid:"  # prefix of a cached answer that stayed invalid after the re-ask (no JSON answer starts so)


CALL_KIND: ContextVar[str] = ContextVar("clado_llm_call_kind", default="other")  # what the current call is for


@contextmanager
def call_kind(kind: str) -> Iterator[None]:
    """Count the requests sent inside the block under `kind` in `LLMStats.by_kind`."""
    token = CALL_KIND.set(kind)
    try:
        yield
    finally:
        CALL_KIND.reset(token)


@dataclass
class LLMStats:
    """Requests sent (retries included), cache hits, failures, re-asks and the server's token counts; `by_kind`
    splits calls and tokens by what they were for (the caller's `kind`, a re-ask as `<kind>_reask`)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    reasks: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _kind(self) -> dict[str, int]:
        return self.by_kind.setdefault(CALL_KIND.get(), {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})

    def sent(self) -> None:
        self.calls += 1
        self._kind()["calls"] += 1

    def used(self, usage: Any) -> None:
        prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        kind = self._kind()
        kind["prompt_tokens"] += prompt
        kind["completion_tokens"] += completion


class Endpoint:
    """One server of the fleet: its client, requests in flight, until when it is left out, and whether it has
    ever answered (with any HTTP status) or refused the connection."""

    def __init__(self, url: str, client: openai.AsyncOpenAI):
        self.url, self.client = url, client
        self.in_flight = 0
        self.down_until = 0.0
        self.failures = 0
        self.answered = 0
        self.reached = False
        self.refused = False


class EndpointPool:
    """Least-outstanding-requests choice among the endpoints that are up; a failing one is left out for
    `cooldown` seconds, then tried again. When all are out, the one that comes back first is used."""

    def __init__(self, endpoints: list[Endpoint], *, cooldown: float):
        self.endpoints, self.cooldown = endpoints, cooldown
        self.clock = time.monotonic

    def pick(self) -> Endpoint:
        now = self.clock()
        up = [e for e in self.endpoints if e.down_until <= now]
        if not up:
            return min(self.endpoints, key=lambda e: e.down_until)
        return min(up, key=lambda e: e.in_flight)  # ties: the first listed

    def failed(self, endpoint: Endpoint) -> None:
        endpoint.failures += 1
        if len(self.endpoints) > 1:
            endpoint.down_until = self.clock() + self.cooldown
            log.warning("LLM endpoint %s failed; leaving it out for %.0f s", endpoint.url, self.cooldown)

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.down_until = 0.0
        endpoint.answered += 1

    def unreachable(self) -> bool:
        """Every endpoint refused the connection and none has ever answered: a wrong URL or no server."""
        return all(e.refused and not e.reached for e in self.endpoints)

    @contextmanager
    def using(self) -> Iterator[Endpoint]:
        """The chosen endpoint, counted in flight while the block runs; marked failed on an endpoint error."""
        endpoint = self.pick()
        endpoint.in_flight += 1
        try:
            yield endpoint
        except Exception as exc:
            if endpoint_fault(exc):
                self.failed(endpoint)
            raise
        else:
            self.succeeded(endpoint)
        finally:
            endpoint.in_flight -= 1


def endpoint_urls(base_url: str | list[str] | None) -> list[str]:
    """The configured base URL(s) as a list."""
    if base_url is None:
        return []
    return [base_url] if isinstance(base_url, str) else list(base_url)


class LLMClient:
    """Async client for any OpenAI-compatible server; every LLM call in clado goes through it."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        seed: int = 0,
        store: Store | None = None,
        http_client: httpx.AsyncClient | None = None,
    ):
        if not settings.base_url or not settings.model:
            raise ValueError("LLMClient needs settings.base_url and settings.model (start the embedded server first)")
        self.settings, self.seed = settings, seed
        self.store = store
        self.stats = LLMStats()
        self.dialect: Dialect | None = None if settings.schema_dialect == "auto" else settings.schema_dialect
        endpoints = [
            Endpoint(url, openai.AsyncOpenAI(
                base_url=url, api_key=settings.api_key, timeout=settings.timeout, max_retries=0,
                http_client=http_client,  # type: ignore[arg-type]  # typed as httpx2's client; httpx's works too
            ))
            for url in endpoint_urls(settings.base_url)
        ]  # fmt: skip
        self.pool = EndpointPool(endpoints, cooldown=settings.endpoint_cooldown)
        self.breaker = CircuitBreaker(settings.breaker_failures, endpoint_urls(settings.base_url))
        self._semaphore: asyncio.Semaphore | None = None
        self._probe_lock: asyncio.Lock | None = None

    @property
    def model(self) -> str:
        return self.settings.model or ""

    async def aclose(self) -> None:
        for endpoint in self.pool.endpoints:
            await endpoint.client.close()

    def _limits(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        if self._semaphore is None or self._probe_lock is None:
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency * len(self.pool.endpoints))
            self._probe_lock = asyncio.Lock()
        return self._semaphore, self._probe_lock

    def _params(self, max_tokens: int | None) -> dict[str, Any]:
        return {
            "temperature": self.settings.temperature,
            "seed": self.seed,
            "max_tokens": max_tokens or self.settings.max_tokens,
        }

    def cache_key(self, kind: str, messages: list[dict[str, str]], schema: dict | None, params: dict) -> str:
        """model + rendered-prompt hash + schema hash + sampling parameters."""
        return sha256_text(
            stable_json(
                {
                    "kind": kind,
                    "model": self.model,
                    "prompt": sha256_text(stable_json(messages)),
                    "schema": sha256_text(stable_json(schema)) if schema is not None else None,
                    "params": params,
                }
            )
        )

    async def _send(self, **request: Any) -> Any:
        """One request with retries and backoff; counts calls, retries, failures and tokens."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=wait_exponential(multiplier=0.5, min=0.5, max=20),
            reraise=True,
        )
        attempt_no = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_no += 1
                    if attempt_no > 1:
                        self.stats.retries += 1
                    response = await self._attempt(**request)
        except Exception:
            self.stats.failures += 1
            raise
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.stats.used(usage)
        return response

    async def _attempt(self, *, fatal_status: tuple[int, ...] = CONFIG_STATUS, **request: Any) -> Any:
        """One request to the fleet, within the concurrency bound and the total deadline; a status of
        `fatal_status`, or a fleet that refuses every connection, stops every call (see `_fatal`)."""
        semaphore, _ = self._limits()
        async with semaphore:
            self.breaker.check()
            self.stats.sent()
            with self.pool.using() as endpoint:
                try:
                    response = await self._create(endpoint, request)
                except Exception as exc:
                    if (fatal := self._fatal(exc, endpoint, fatal_status)) is not None:
                        raise fatal from exc
                    raise
        self.breaker.succeeded()
        return response

    async def _create(self, endpoint: Endpoint, request: dict[str, Any]) -> Any:
        """The chat completion from `endpoint`, abandoned past the `timeout` deadline (not a per-read timeout)."""
        try:
            async with asyncio.timeout(self.settings.timeout):
                response = await endpoint.client.chat.completions.create(model=self.model, **request)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no complete answer from {endpoint.url} within {self.settings.timeout:g} s"
            ) from None
        endpoint.reached = True
        if not getattr(response, "choices", None):
            raise TransientError(f"response without choices: {str(response)[:200]}")
        return response

    def _fatal(self, exc: Exception, endpoint: Endpoint, fatal_status: tuple[int, ...]) -> LLMFatal | None:
        """The error that stops every call (a refused key or model, no server at any URL, the breaker opening),
        or None when `exc` fails only this request."""
        if isinstance(exc, openai.APIStatusError):
            endpoint.reached = True
            if exc.status_code in fatal_status:
                return self.breaker.stop(config_error(exc, url=endpoint.url, model=self.model))
        if connection_refused(exc):
            endpoint.refused = True
            if self.pool.unreachable():
                return self.breaker.stop(unreachable_error([e.url for e in self.pool.endpoints]))
        if is_transient(exc):
            return self.breaker.failed(exc)
        return None

    def _response_format(self, dialect: Dialect, schema: type[BaseModel]) -> dict[str, Any]:
        json_schema = schema.model_json_schema()
        if dialect == "json_object":
            return {"type": "json_object", "schema": json_schema}
        return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": json_schema, "strict": False}}

    async def _complete_json(self, messages: list[dict[str, str]], schema: type[BaseModel], params: dict) -> str:
        """One structured completion in the configured dialect, probing once when the dialect is auto."""
        _, probe_lock = self._limits()
        if self.dialect is None:
            async with probe_lock:
                if self.dialect is None:
                    try:
                        response = await self._probe(messages, schema, params)
                        self.dialect = "json_schema"
                        return response.choices[0].message.content or ""
                    except openai.APIStatusError as exc:
                        if exc.status_code not in (400, 404, 415, 422, 500, 501):
                            raise
                        log.info("server refused json_schema (HTTP %s); using json_object", exc.status_code)
                        self.dialect = "json_object"
        response = await self._send(
            messages=messages, response_format=self._response_format(self.dialect, schema), **params
        )
        return response.choices[0].message.content or ""

    async def _probe(self, messages: list[dict[str, str]], schema: type[BaseModel], params: dict) -> Any:
        return await self._attempt(
            fatal_status=(401, 403),  # a 404 may be the server refusing json_schema: json_object is tried next
            messages=messages,
            response_format=self._response_format("json_schema", schema),
            **params,
        )

    async def structured(
        self,
        prompt: str,
        schema: type[T],
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        reuse_invalid: bool = True,
        kind: str | None = None,
    ) -> T:
        """Ask for an answer matching `schema`; re-ask once when it does not validate; cached in the store.

        An answer still invalid after the re-ask is cached too and raised again from the cache, so a re-run or a
        resumed build makes the same choice without asking; `reuse_invalid=False` asks the server again instead (for
        callers that keep their own failure record and retry on request, as facet extraction does). `kind` names
        what the call is for in `stats.by_kind` (default: the schema's name)."""
        with call_kind(kind or schema.__name__):
            messages = [{"role": "system", "content": system or render("system")}, {"role": "user", "content": prompt}]
            params = self._params(max_tokens)
            key = self.cache_key("structured", messages, schema.model_json_schema(), params)
            cached = self.store.cache_get(key) if self.store else None
            if cached is not None and (reuse_invalid or not cached.startswith(INVALID_MARK)):
                self.stats.cache_hits += 1
                if cached.startswith(INVALID_MARK):
                    failure = json.loads(cached[len(INVALID_MARK) :])
                    raise InvalidOutput(failure["error"], failure["raw"])
                return schema.model_validate_json(cached)
            raw = await self._complete_json(messages, schema, params)
            try:
                answer = schema.model_validate_json(raw)
            except ValidationError as exc:
                self.stats.reasks += 1
                reask = messages + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": render("reask", error=_short_error(exc))},
                ]
                with call_kind(f"{CALL_KIND.get()}_reask"):
                    raw = await self._complete_json(reask, schema, params)
                try:
                    answer = schema.model_validate_json(raw)
                except ValidationError as exc2:
                    self.stats.invalid += 1
                    error = f"invalid {schema.__name__} after a re-ask: {_short_error(exc2)}"
                    if self.store:
                        self.store.cache_put(key, self.model, INVALID_MARK + json.dumps({"error": error, "raw": raw}))
                    raise InvalidOutput(error, raw) from exc2
            if self.store:
                self.store.cache_put(key, self.model, answer.model_dump_json())
            return answer

    async def top_logprobs(self, prompt: str, *, system: str | None = None, kind: str = "judge") -> dict[str, float]:
        """Top-20 log-probabilities of the first answer token (for yes/no judges); cached."""
        with call_kind(kind):
            messages = [{"role": "system", "content": system or render("system")}, {"role": "user", "content": prompt}]
            params = self._params(1)
            key = self.cache_key("logprobs", messages, None, params)
            cached = self.store.cache_get(key) if self.store else None
            if cached is not None:
                self.stats.cache_hits += 1
                return json.loads(cached)
            response = await self._send(messages=messages, logprobs=True, top_logprobs=20, **params)
            content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
            if not content:
                raise TransientError("server returned no logprobs")
            top = {entry.token: entry.logprob for entry in content[0].top_logprobs}
            if self.store:
                self.store.cache_put(key, self.model, json.dumps(top))
            return top


async def gather_calls(calls: Iterable[Awaitable[R]]) -> list[R]:
    """Await LLM calls concurrently; the first error cancels the others (a stopped LLM stops the stage at once)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _short_error(exc: ValidationError) -> str:
    """A compact, model-readable summary of a validation error."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "answer"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
