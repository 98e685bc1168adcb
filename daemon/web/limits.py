"""One body-size limit for every route, enforced while the body streams in.

A pure ASGI middleware: a request that declares a `Content-Length` over the limit is
refused with 413 before a byte of its body is read; a chunked one is counted as it
arrives and refused the moment it crosses the limit. Whatever the route was doing with
the body is abandoned (its own response, if any, is dropped), so no route can buffer more
than the limit, whoever wrote it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

log = logging.getLogger("watchkeeper.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Told about each refusal: (scope, the first bytes of the body, the size seen or declared).
OnRefused = Callable[[Scope, bytes, int], Awaitable[None]]
HEAD_BYTES = 4096


class BodyTooLarge(Exception):  # noqa: N818 - a refusal carried out of the route
    """The request body crossed the limit; the 413 has been sent already."""


class BodyLimit:
    """Refuse request bodies over `limit()` bytes with 413, without reading past the limit."""

    def __init__(
        self, app: ASGIApp, limit: Callable[[], int], on_refused: OnRefused | None = None
    ) -> None:
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (or pass anything that is not HTTP straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, b"", declared, limit)
            return
        seen = 0
        head = bytearray()
        refused = started = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                seen += len(chunk)
                if len(head) < HEAD_BYTES:
                    head.extend(chunk[: HEAD_BYTES - len(head)])
                if seen > limit:
                    refused = True
                    if not started:
                        # Shielded: a streaming route reads the body from a task of its
                        # own (Starlette's disconnect listener) and may cancel it; the
                        # record and the 413 must not be cut off halfway.
                        with anyio.CancelScope(shield=True):
                            await self._refuse(scope, send, bytes(head), seen, limit)
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the route says now is moot
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not refused:
                raise
            # A route turned the refusal into an error of its own; the 413 stands.

    async def _refuse(self, scope: Scope, send: Send, head: bytes, size: int, limit: int) -> None:
        reason = f"body of {size} bytes exceeds http.max_body_bytes ({limit})"
        peer = scope.get("client") or ("-", 0)
        log.warning(
            "refused status=413 %s %s peer=%s reason=%s",
            scope.get("method"), scope.get("path"), peer[0], reason,
        )
        # Recorded before the answer, as every refused intake is: a 413 means it is on file.
        if self.on_refused is not None:
            try:
                await self.on_refused(scope, head, size)
            except Exception:
                log.exception("could not record a refused body path=%s", scope.get("path"))
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
