"""A follower forwards writes to the leader and answers with the leader's answer."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from daemon.web.forward import FORWARDED_BY, LeaderForwarding


def _echo(who: str) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "who": who,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "body": (await request.body()).decode(),
                "headers": dict(request.headers),
                "client": request.client.host if request.client else None,
            },
            status_code=202 if who == "leader" else 200,
            headers={"x-answered-by": who},
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT"])])


def _follower(leader_url: str | None, leader: Any = None) -> httpx.AsyncClient:
    upstream = httpx.AsyncClient(transport=httpx.ASGITransport(app=leader or _echo("leader")))
    app = LeaderForwarding(
        _echo("follower"), lambda: leader_url, lambda: 5.0,
        sign_on_headers=lambda: frozenset({"x-forwarded-user"}), replica="f1", client=upstream,
    )
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://follower")


async def test_reads_are_served_here_and_writes_by_the_leader() -> None:
    async with _follower("http://leader") as c:
        r = await c.get("/api/v1/incidents")
        assert r.json()["who"] == "follower"
        r = await c.post(
            "/api/v2/alerts?x=1", json=[{"labels": {"alertname": "A"}}],
            headers={"authorization": "Bearer tok-123", "x-forwarded-user": "mallory",
                     "x-forwarded-for": "10.9.9.9"},
        )
    assert r.status_code == 202  # the leader's own answer, status and headers
    assert r.headers["x-answered-by"] == "leader"
    seen = r.json()
    assert (seen["who"], seen["method"], seen["path"], seen["query"]) == (
        "leader", "POST", "/api/v2/alerts", "x=1"
    )
    assert seen["body"] == '[{"labels":{"alertname":"A"}}]'
    assert seen["headers"]["authorization"] == "Bearer tok-123"  # the caller's credentials
    assert seen["headers"]["x-forwarded-for"] == "192.0.2.7"  # the caller, not what it claimed
    assert seen["headers"][FORWARDED_BY] == "f1"
    assert "x-forwarded-user" not in seen["headers"]  # a sign-on this replica did not believe


async def test_the_leader_handles_its_own_writes() -> None:
    async with _follower(None) as c:
        r = await c.post("/api/v2/alerts", json=[])
    assert r.json()["who"] == "follower"


async def test_no_leader_means_503_with_retry_after() -> None:
    async with _follower("") as c:
        r = await c.post("/api/v2/alerts", json=[])
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "election" in r.json()["detail"]


async def test_a_forwarded_request_is_never_forwarded_again() -> None:
    async with _follower("http://leader") as c:
        r = await c.post("/api/v2/alerts", json=[], headers={FORWARDED_BY: "f2"})
    assert r.status_code == 503


async def test_console_sign_in_stays_on_this_replica() -> None:
    async with _follower("http://leader") as c:
        r = await c.post("/login", data={"token": "x"})
    assert r.json()["who"] == "follower"


async def test_a_leader_that_does_not_answer_is_a_503_not_a_500() -> None:
    async def gone(scope: Any, receive: Any, send: Any) -> None:
        raise httpx.ConnectError("connection refused")

    async with _follower("http://leader", leader=gone) as c:
        r = await c.post("/api/v2/alerts", json=[])
    assert r.status_code == 503
    assert "did not answer" in r.json()["detail"]
