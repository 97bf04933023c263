"""What an LLM failure means: one request's bad luck (retried), the server's fault (its endpoint is left out for a
while), a configuration mistake, or the end of the stage (the circuit breaker)."""

from __future__ import annotations

import json

import httpx
import openai

try:  # openai 3 runs its requests on httpx2; a client given an httpx transport raises httpx's errors
    import httpx2

    CONNECT_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx2.ConnectError)
except ImportError:
    CONNECT_ERRORS = (httpx.ConnectError,)


class TransientError(RuntimeError):
    """A response that could not be read (malformed body): worth retrying."""


class DeadlineExceeded(TransientError):
    """No complete answer within the request's total timeout (connecting, queueing at the server and reading)."""


class InvalidOutput(RuntimeError):
    """The model's answer failed schema validation twice (after one re-ask)."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


class LLMFatal(RuntimeError):
    """The LLM cannot be used: this call and every later one fail at once, so the stage stops."""


class LLMConfigError(LLMFatal):
    """The server refuses the configuration (a wrong key, model or URL) or nothing listens at the URL."""


class LLMUnavailable(LLMFatal):
    """The circuit breaker opened: the servers failed too many requests in a row (down, hung or overloaded)."""


CONFIG_STATUS = (401, 403, 404)  # wrong key, key without access, wrong model name or path


def is_transient(exc: BaseException) -> bool:
    """Failures worth a retry: timeouts, connection errors, 5xx, 408, 429 and malformed bodies."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, TransientError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code == 408
    return isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, httpx.TransportError))


def endpoint_fault(exc: BaseException) -> bool:
    """Errors that say the server is unwell (not that the request was bad): connection, timeout, 5xx."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, httpx.TransportError, DeadlineExceeded)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def connection_refused(exc: BaseException) -> bool:
    """Nothing accepted the connection (refused, or the host is unknown): not a timeout."""
    if isinstance(exc, openai.APITimeoutError):
        return False
    cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
    return isinstance(cause, CONNECT_ERRORS)


def config_error(exc: openai.APIStatusError, *, url: str, model: str) -> LLMConfigError:
    """The one message for a server that refuses the key (401, 403) or knows no such model or path (404)."""
    detail = f"HTTP {exc.status_code}: {str(exc.message)[:300]}"
    if exc.status_code == 404:
        return LLMConfigError(
            f"the LLM server at {url} answered {detail} for model {model!r}: check llm.model and that llm.base_url "
            "is the server's OpenAI base URL (usually ending in /v1)"
        )
    return LLMConfigError(
        f"the LLM server at {url} refused the request ({detail}): check llm.api_key or CLADO_LLM_API_KEY"
    )


def unreachable_error(urls: list[str]) -> LLMConfigError:
    return LLMConfigError(
        f"cannot connect to the LLM server at {', '.join(urls)} (connection refused): check llm.base_url and that "
        "the server is running"
    )


class CircuitBreaker:
    """Counts failed requests in a row over the whole fleet (any answer resets it); at `threshold` it opens and
    every later call fails at once. A configuration error opens it too."""

    def __init__(self, threshold: int, urls: list[str]):
        self.threshold, self.urls = threshold, urls
        self.failures = 0
        self.error: LLMFatal | None = None

    def check(self) -> None:
        """Raise the error that opened the breaker, if it is open."""
        if self.error is not None:
            raise type(self.error)(str(self.error))

    def stop(self, error: LLMFatal) -> LLMFatal:
        """Open the breaker with `error` (the first one is kept) and return it."""
        if self.error is None:
            self.error = error
        return error

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, exc: BaseException) -> LLMFatal | None:
        """Count one failed request; the breaker's error when it is open (this failure may open it), else None."""
        self.failures += 1
        if self.error is None and self.failures >= self.threshold:
            servers = "server at " + self.urls[0] if len(self.urls) == 1 else "servers at " + ", ".join(self.urls)
            self.error = LLMUnavailable(
                f"stopping: the LLM {servers} failed {self.failures} requests in a row (last: {type(exc).__name__}: "
                f"{exc}); what was answered is kept, so the next run resumes once the server answers again"
            )
        return None if self.error is None else type(self.error)(str(self.error))
