"""Replicas: a follower forwards every write to the leader and answers with its answer.

Reads (GET, HEAD) are served from the follower's warm state. Anything else (alert intake,
acknowledgements, approvals, silences, chat buttons) changes state, which only the leader
commits: the request goes to the leader's advertised URL with its body and headers (the
caller's `Authorization` included) and the leader's status, headers and body come back.
So a 2xx from any replica means the leader committed. A request is forwarded once: one
that arrives forwarded is never sent on again (no loops while leadership moves).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from daemon.config.auth import SSO_IDENTITY, Identity

log = logging.getLogger("watchkeeper.forward")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# The console's sign-in and sign-out touch only this process's sessions: answered here.
_LOCAL = frozenset({"/login", "/logout"})
# Marks a forwarded request (and names the replica that forwarded it).
FORWARDED_BY = "x-watchkeeper-forwarded-by"
# Not passed on: hop-by-hop headers, and what the forwarding replica sets itself.
_DROP = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
        "trailer", "upgrade", "proxy-authorization", "proxy-connection",
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", FORWARDED_BY,
    }
)


class LeaderForwarding:
    """ASGI middleware: on a follower, send writes to the leader (see the module doc)."""

    def __init__(
        self,
        app: Any,
        leader_url: Callable[[], str | None],
        timeout: Callable[[], float],
        *,
        sign_on_headers: Callable[[], frozenset[str]] = frozenset,
        replica: str = "",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.app = app
        self.leader_url = leader_url
        self.timeout = timeout
        self.sign_on_headers = sign_on_headers
        self.replica = replica
        self._client = client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _READS or scope["path"] in _LOCAL:
            await self.app(scope, receive, send)
            return
        target = self.leader_url()
        if target is None:  # we lead (or there are no replicas): handle it here
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        if not target or any(k == FORWARDED_BY for k, _ in headers):
            await _answer(
                send, 503, {"detail": "no replica leads right now (an election is under way); "
                            "retry shortly"},
                [(b"retry-after", b"1")],
            )
            return
        body = await _body(receive)
        drop = _DROP
        if not isinstance(SSO_IDENTITY.get(), Identity):
            # Sign-on headers this replica did not believe (not from its trusted proxy) must
            # not reach a leader that believes this replica.
            drop = drop | self.sign_on_headers()
        out = [(k, v) for k, v in headers if k not in drop]
        client = (scope.get("client") or ("", 0))[0]
        if client:
            out.append(("x-forwarded-for", client))
        out.append((FORWARDED_BY, self.replica or "follower"))
        url = target + scope.get("root_path", "") + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            r = await self._http().request(
                scope["method"], url, content=body, headers=out, timeout=self.timeout()
            )
        except httpx.HTTPError as e:
            log.warning("forwarding to the leader failed leader=%s: %s", target, e)
            await _answer(
                send, 503,
                {"detail": f"the leader at {target} did not answer ({type(e).__name__}); "
                           "nothing was committed by this replica; retry"},
                [(b"retry-after", b"1")],
            )
            return
        keep = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in r.headers.multi_items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                 "content-encoding")
        ]
        keep.append((b"content-length", str(len(r.content)).encode()))
        await send({"type": "http.response.start", "status": r.status_code, "headers": keep})
        await send({"type": "http.response.body", "body": r.content})

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client


async def _body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _answer(
    send: Any, status: int, doc: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": data})
