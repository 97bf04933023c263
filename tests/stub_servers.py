"""Misbehaving OpenAI-compatible servers on 127.0.0.1 (tests only), each answering every request the same way:

- ``StubServer.status_of(code, message)``: that HTTP status with an OpenAI-style error body (401, 404, ...);
- ``StubServer.hung()``: reads the request and never answers;
- ``StubServer.answer(content)``: a normal completion; with `interval`, its body arrives one byte every `interval`
  seconds, so no single read waits long but the whole answer takes `len(body) * interval`.

`closed_port_url()` is a URL nothing listens on (connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes import completion


class StubServer:
    def __init__(self, *, status: int = 200, body: bytes = b"", hang: bool = False, interval: float = 0.0):
        self.status, self.body, self.hang, self.interval = status, body, hang, interval
        self.requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    @classmethod
    def status_of(cls, code: int, message: str) -> StubServer:
        return cls(status=code, body=json.dumps({"error": {"message": message, "code": code}}).encode())

    @classmethod
    def hung(cls) -> StubServer:
        return cls(hang=True)

    @classmethod
    def answer(cls, content: str, *, interval: float = 0.0) -> StubServer:
        return cls(body=json.dumps(completion(content)).encode(), interval=interval)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append(json.loads(raw or b"{}"))
                stub._respond(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="stub-server", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def _respond(self, handler: BaseHTTPRequestHandler) -> None:
        if self.hang:
            self._stopping.wait()
            handler.close_connection = True
            return
        try:
            handler.send_response(self.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(self.body)))
            handler.end_headers()
            if not self.interval:
                handler.wfile.write(self.body)
                return
            for i in range(len(self.body)):
                if self._stopping.is_set():
                    return
                handler.wfile.write(self.body[i : i + 1])
                handler.wfile.flush()
                time.sleep(self.interval)
        except OSError:  # the client gave up
            handler.close_connection = True


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 whose port was just free (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
