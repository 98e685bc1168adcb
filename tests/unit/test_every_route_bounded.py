"""Every route of the app, listed from the app itself: a body over `http.max_body_bytes` is
refused with 413 however it is sent, and a caller who may not use a route is refused
without the route reading its body (401/403, never a 422 from parsing it first).

Raw ASGI, so the test sees exactly how much of the body the app pulled."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from routekit import concrete, in_process, served_routes

from daemon.config.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMIT = 4096
TOKENS = {"viewer": "tok-viewer-0001", "admin": "tok-admin-00001"}
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# A known caller with too low a role is refused by the domain, which records the refused
# request (ActionRequestRefused, with the body's `via`): these read a known caller's body.
AUDITED = {
    "/api/v1/actions/{action_id}/approve", "/api/v1/actions/{action_id}/reject",
    "/api/v1/pause", "/api/v1/resume",
}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'e.db'}",
        http={"ingest_auth": "token", "max_body_bytes": LIMIT},
        auth={"tokens": [{"name": r, "role": r, "token": t} for r, t in TOKENS.items()]},
        notifications={"slack_app": {"signing_secret": "s3cret-s3cret"}},
    )
    async with in_process(settings, T0) as (app, _):
        yield app


@dataclass
class Exchange:
    """One request sent as raw ASGI messages, and what came back."""

    status: int = 0
    body: bytes = b""
    pulled: int = 0  # body messages the app asked for
    sent: list[MutableMapping[str, Any]] = field(default_factory=list)


async def call(
    app: FastAPI,
    method: str,
    path: str,
    chunks: list[bytes],
    *,
    headers: dict[str, str] | None = None,
    declare: bool = True,
    endless: bool = False,
) -> Exchange:
    """Send `chunks` as the body (for ever, cycling, when `endless`)."""
    total = sum(len(c) for c in chunks)
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"content-type", b"application/json"))
    if declare:
        raw.append((b"content-length", str(total).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": raw, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    ex = Exchange()

    async def receive() -> dict[str, Any]:
        if ex.pulled >= 10_000:
            raise AssertionError(f"{method} {path} read 10,000 chunks and went on")
        i = ex.pulled
        ex.pulled += 1
        if endless:
            return {"type": "http.request", "body": chunks[i % len(chunks)], "more_body": True}
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        ex.sent.append(message)
        if message["type"] == "http.response.start":
            ex.status = message["status"]
        elif message["type"] == "http.response.body":
            ex.body += message.get("body", b"")

    await app(scope, receive, send)
    return ex


def test_the_walk_finds_the_routes_that_take_bodies(app: FastAPI) -> None:
    found = served_routes(app)
    assert len(found) > 50
    for known in (
        ("POST", "/login"), ("POST", "/logout"), ("POST", "/api/v1/slack/interactions"),
        ("POST", "/api/v1/pause"), ("POST", "/api/v1/resume"),
        ("POST", "/api/v1/incidents/{incident_id}/note"),
        ("POST", "/incidents/{incident_id}/do/{verb}"), ("DELETE", "/api/v2/silence/{silence_id}"),
    ):
        assert known in found


async def test_every_route_refuses_a_declared_body_over_the_limit_unread(app: FastAPI) -> None:
    for method, path in sorted(served_routes(app)):
        ex = await call(app, method, concrete(path), [b" " * (LIMIT + 1)])
        assert ex.status == 413, (method, path, ex.status, ex.body[:200])
        assert b"exceeds http.max_body_bytes" in ex.body
        assert ex.pulled == 0, (method, path, "read a body it had refused")


async def test_every_route_cuts_an_endless_chunked_body_at_the_limit(app: FastAPI) -> None:
    chunk = b"[" * 1024
    for method, path in sorted(served_routes(app)):
        ex = await call(
            app, method, concrete(path), [chunk], declare=False, endless=True,
            headers={"Authorization": f"Bearer {TOKENS['admin']}"},
        )
        # Routes that never read a body answer at once; the others stop at the limit.
        if ex.pulled > 0 and ex.status == 413:
            assert ex.pulled <= LIMIT // len(chunk) + 1, (method, path, ex.pulled)
        else:
            assert ex.pulled <= 1, (method, path, ex.status, ex.pulled)
        # Some answer (a server sends 500 for an app that returns without one), never a 5xx.
        assert 0 < ex.status < 500, (method, path, ex.status, ex.body[:200])


@pytest.mark.parametrize("who", [None, "not-a-token-at-all", TOKENS["viewer"]])
async def test_callers_who_may_not_post_are_refused_before_the_body_is_read(
    app: FastAPI, who: str | None
) -> None:
    headers = {"Authorization": f"Bearer {who}"} if who else {}
    for method, path in sorted(served_routes(app)):
        if method not in BODY_METHODS:
            continue
        # Malformed, and within the limit: parsing it first would answer 400 or 422.
        ex = await call(app, method, concrete(path), [b"{not json", b"&x=1"], headers=headers)
        if who == TOKENS["viewer"] and path in AUDITED:
            assert ex.status == 422, (method, path, ex.status)  # authenticated, then audited
            continue
        assert ex.status in (401, 403), (method, path, who, ex.status, ex.body[:200])
        assert ex.pulled == 0, (method, path, who, "read the body of a caller it refused")
