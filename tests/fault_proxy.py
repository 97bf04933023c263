"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real OpenAI-compatible server (tests only).

Faults hit a seeded, exact share of requests: in every block of round(1 / rate) consecutive requests (forced
failures aside) one request, at a seeded position, gets the next fault of `kinds` in turn:

- ``http_500``: HTTP 500 with an error body, never forwarded;
- ``timeout``: the request is held without an answer until the client gives up (at most `hold` seconds),
  then the connection is closed;
- ``drop``: the connection is closed without an answer;
- ``malformed``: HTTP 200 whose JSON body is cut off mid-way.

`fail_when(body)` forces an HTTP 500 (counted as ``forced_500``) on every matching request, whatever the
schedule; `pause()` holds every request until `resume()`. Every request is recorded in `requests`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

FAULT_KINDS = ("http_500", "timeout", "drop", "malformed")
MALFORMED_BODY = (
    b'{"id": "chatcmpl-fault", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assi'
)


@dataclass
class ProxiedRequest:
    """One request as the proxy saw it."""

    number: int
    path: str
    body: dict[str, Any]
    fault: str | None = None  # injected fault kind; None = forwarded
    status: int | None = None  # status sent to the client (None: no answer)
    abandoned: bool = False  # forwarded, but the client had gone before the answer came back
    seconds: float = 0.0  # from arrival to the answer (or to giving up)
    usage: dict[str, int] | None = None  # the upstream answer's token usage

    @property
    def schema_title(self) -> str | None:
        return ((self.body.get("response_format") or {}).get("schema") or {}).get("title")

    @property
    def user_prompt(self) -> str:
        return "\n".join(m.get("content") or "" for m in self.body.get("messages", []) if m.get("role") == "user")

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.get("content") or "") for m in self.body.get("messages", []))


class FaultProxy:
    """Forward to `upstream` (an OpenAI base URL such as http://127.0.0.1:PORT/v1), injecting faults."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int = 0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        hold: float = 900.0,
        fail_when: Callable[[dict[str, Any]], bool] | None = None,
        upstream_timeout: float = 900.0,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.kinds = _checked(kinds)
        self.seed = seed
        self.hold = hold
        self.upstream_timeout = upstream_timeout
        self.requests: list[ProxiedRequest] = []
        self.rate = _checked_rate(rate)
        self._fail_when = fail_when
        self._faults_made = 0
        self._scheduled = 0  # requests subject to the schedule so far
        self._busy = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # configuration while running
    def set_faults(
        self,
        *,
        fail_when: Callable[[dict[str, Any]], bool] | None,
        kinds: tuple[str, ...] | None = None,
        rate: float | None = None,
    ) -> None:
        """Replace the forced-failure predicate (None: no forced failures) and, if given, the fault kinds and rate."""
        with self._lock:
            self._fail_when = fail_when
            if kinds is not None:
                self.kinds = _checked(kinds)
                self._faults_made = 0
            if rate is not None:
                self.rate = _checked_rate(rate)

    def pause(self) -> None:
        """Hold every new and waiting request until `resume()`."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # results
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def counts(self) -> Counter:
        """requests, forwarded, abandoned and one entry per fault kind."""
        with self._lock:
            seen = list(self.requests)
        counts = Counter(requests=len(seen), forwarded=sum(r.fault is None for r in seen))
        counts.update(r.fault for r in seen if r.fault)
        counts["abandoned"] = sum(r.abandoned for r in seen)
        return counts

    def mark(self) -> int:
        """The number of requests so far: `since(mark)` lists the requests after it."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[ProxiedRequest]:
        with self._lock:
            return self.requests[mark:]

    def wait_idle(self, timeout: float = 900.0) -> None:
        """Wait until no request is being handled (abandoned ones included), so counts are final."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._busy == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._busy} requests still in the proxy after {timeout} s")
            time.sleep(0.05)

    # lifecycle
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self, b"")

            def do_POST(self) -> None:
                proxy._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._open.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # request handling
    def _fault_for(self, body: dict[str, Any]) -> str | None:
        """Called under the lock: the fault for the next request, or None."""
        if self._fail_when is not None and body and self._fail_when(body):
            return "forced_500"
        number = self._scheduled
        self._scheduled += 1
        if self.rate <= 0:
            return None
        block = max(2, round(1 / self.rate))
        position = random.Random(self.seed * 1_000_003 + number // block).randrange(block)
        if number % block != position:
            return None
        kind = self.kinds[self._faults_made % len(self.kinds)]
        self._faults_made += 1
        return kind

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        with self._lock:
            self._busy += 1
        try:
            self._open.wait()
            self._answer(handler, raw)
        finally:
            with self._lock:
                self._busy -= 1

    def _answer(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        started = time.monotonic()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        with self._lock:
            request = ProxiedRequest(number=len(self.requests), path=handler.path, body=body)
            request.fault = self._fault_for(body)
            self.requests.append(request)
        try:
            self._respond(handler, request, raw)
        finally:
            request.seconds = round(time.monotonic() - started, 3)

    def _respond(self, handler: BaseHTTPRequestHandler, request: ProxiedRequest, raw: bytes) -> None:
        if request.fault in ("http_500", "forced_500"):
            request.status = 500
            _reply(handler, 500, json.dumps({"error": {"message": f"injected fault: {request.fault}"}}).encode())
        elif request.fault == "timeout":
            deadline = time.monotonic() + self.hold
            while not _client_gone(handler.connection) and time.monotonic() < deadline and not self._stopping.is_set():
                time.sleep(0.05)
            handler.close_connection = True
        elif request.fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif request.fault == "malformed":
            request.status = 200
            _reply(handler, 200, MALFORMED_BODY)
        else:
            status, content_type, answer = self._forward(handler.command, handler.path, raw)
            if _client_gone(handler.connection):
                request.abandoned = True
                handler.close_connection = True
                return
            request.status = status
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                request.usage = json.loads(answer).get("usage")
            _reply(handler, status, answer, content_type=content_type)

    def _forward(self, method: str, path: str, raw: bytes) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)
        try:
            headers = {"Content-Type": "application/json"} if raw else {}
            connection.request(method, path, body=raw or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", "application/json"), response.read()
        finally:
            connection.close()


def _checked(kinds: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown or not kinds:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
    return tuple(kinds)


def _checked_rate(rate: float) -> float:
    if not 0.0 <= rate <= 0.5:
        raise ValueError(f"rate must be within [0, 0.5], got {rate}")
    return rate


def _reply(
    handler: BaseHTTPRequestHandler, status: int, payload: bytes, *, content_type: str = "application/json"
) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except OSError:  # the client went away meanwhile
        handler.close_connection = True


def _client_gone(connection: socket.socket) -> bool:
    """True when the client has closed its side (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
