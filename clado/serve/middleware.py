"""ASGI middleware of the routing API, outermost first: the bearer token is checked before any of the body is
read (`BearerAuth`), a request must complete in time (`RequestTimeout`), and the body has a size limit (`BodyLimit`)."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

PUBLIC_PATHS = frozenset({"/healthz"})
AUTHORISED = "clado.authorised"  # scope key: whether the caller may see more than the public routes say


async def send_error(send: Any, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A JSON `{"detail": …}` response with `status`."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """With a `token`, every route but /healthz needs `Authorization: Bearer <token>`: 401 is sent from the
    headers alone, before any of the body is received. The scope records whether the caller is authorised."""

    def __init__(self, app: Any, *, token: str | None):
        self.app, self.token = app, token.encode() if token is not None else None

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.token is None:
            return True
        scheme, _, credentials = dict(headers).get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[AUTHORISED] = self._authorised(scope["headers"])
            if not scope[AUTHORISED] and scope["path"] not in PUBLIC_PATHS:
                await send_error(send, 401, "missing or wrong bearer token", ((b"www-authenticate", b"Bearer"),))
                return
        await self.app(scope, receive, send)


class RequestTimeout:
    """A request not answered within `seconds`: 408 while its body is still arriving, else 503."""

    def __init__(self, app: Any, *, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = {"body": False, "response": False}

        async def receiving() -> dict:
            message = await receive()
            seen["body"] |= message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def sending(message: dict) -> None:
            seen["response"] = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds) as deadline:
                await self.app(scope, receiving, sending)
        except TimeoutError:
            if not deadline.expired():
                raise
            if not seen["response"]:  # else the response is cut short and uvicorn closes the connection
                status, what = (503, "answer") if seen["body"] else (408, "body")
                await send_error(send, status, f"request {what} not complete within {self.seconds:g} s")


class BodyLimit:
    """413 for a request body over `max_bytes`, declared or streamed (read before the app runs)."""

    def __init__(self, app: Any, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send: Any) -> None:
        await send_error(send, 413, f"request body larger than {self.max_bytes} bytes")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reject(send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
