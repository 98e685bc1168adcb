"""Trust that must not outlive a reload or a proxy (issue 17, Medium #4 and #9).

Over real HTTP: the Supervisor runs in-process (uvicorn, SQLite) on a free port."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from test_api import TOKENS, running

from daemon.config.settings import HttpConfig
from daemon.web.login_limit import LoginThrottle


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    form = (await c.get("/login")).text
    nonce = form.split('name="nonce" value="')[1].split('"')[0]
    return await c.post("/login", data={"token": token, "nonce": nonce, "next": "/approvals"})


def with_tokens(config: Path, tokens: list[dict[str, str]]) -> None:
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["auth"]["tokens"] = tokens
    config.write_text(yaml.safe_dump(data))


async def test_a_reload_reaches_open_console_sessions(tmp_path: Path) -> None:
    async with running(tmp_path, TOKENS) as d:
        base = str(d.http.base_url)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            assert (await login(c, "responder-token")).status_code == 303
            page = (await c.get("/approvals")).text
            assert '<span class="role">responder</span>' in page
            config = tmp_path / "watchkeeper.yaml"
            tokens = TOKENS["auth"]["tokens"]
            # rory is demoted to viewer: the open session is a viewer's on the next request.
            with_tokens(
                config, [{**t, "role": "viewer"} if t["name"] == "rory" else t for t in tokens]
            )
            await d.supervisor.reload()
            page = (await c.get("/approvals")).text
            assert '<span class="role">viewer</span>' in page
            # rory's token is removed: the session ends.
            with_tokens(config, [t for t in tokens if t["name"] != "rory"])
            await d.supervisor.reload()
            r = await c.get("/approvals")
            assert r.status_code == 303
            assert r.headers["location"].startswith("/login")


INGEST_LOOPBACK = {**TOKENS, "http": {"ingest_auth": "loopback"}}
ALERT = [{"labels": {"alertname": "ViaProxy"}}]


async def test_forwarded_headers_are_ignored_unless_the_proxy_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The audit's setting: uvicorn read FORWARDED_ALLOW_IPS and believed anyone with "*".
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    # Another proxy is listed, so this loopback peer is not one: its header changes nothing.
    # (With none listed, 127.0.0.1 is believed as a local proxy: daemon/web/sso.py.)
    elsewhere = {
        **INGEST_LOOPBACK,
        "http": {"ingest_auth": "loopback", "trusted_proxies": ["10.9.9.9"]},
    }
    async with running(tmp_path / "a", elsewhere) as d:
        for forged in ("203.0.113.9", "127.0.0.1"):
            r = await d.http.post("/api/v2/alerts", json=ALERT, headers={"X-Forwarded-For": forged})
            assert r.status_code == 200, (forged, r.text)
    listed = {
        **INGEST_LOOPBACK,
        "http": {"ingest_auth": "loopback", "trusted_proxies": ["127.0.0.1"]},
    }
    async with running(tmp_path / "b", listed) as d:
        # From a listed proxy the forwarded client counts: a remote one needs a token.
        r = await d.http.post(
            "/api/v2/alerts", json=ALERT, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert r.status_code == 401, r.text
        assert (await d.http.post("/api/v2/alerts", json=ALERT)).status_code == 200


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert HttpConfig(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies
    with pytest.raises(ValidationError, match=r"no '\*'"):
        HttpConfig(trusted_proxies=["*"])


def test_the_login_throttle_counts_failures_per_peer_in_a_window() -> None:
    t = LoginThrottle(limit=3, window=60)
    for at in (0, 1, 2):
        assert t.wait("a", at) == 0
        t.failed("a", at)
    assert t.wait("a", 3) == 57
    assert t.wait("b", 3) == 0  # another peer is not held up
    assert t.wait("a", 60.5) == 0  # the first failure left the window
    t.succeeded("a")
    assert t.wait("a", 61) == 0
    small = LoginThrottle(limit=1, window=60, peers=2)
    for peer in ("p1", "p2", "p3"):
        small.failed(peer, 0)
    assert small.wait("p1", 1) == 0  # forgotten: the table is bounded
    assert small.wait("p3", 1) == 59


async def test_console_logins_are_rate_limited_and_failures_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "watchkeeper.console")
    async with running(tmp_path, TOKENS) as d:
        for _ in range(5):
            assert (await login(d.http, "guess-guess")).status_code == 401
        blocked = await login(d.http, "admin-token")  # right, but too late
        assert blocked.status_code == 429
        assert "too many failed logins" in blocked.text
    failures = [r for r in caplog.records if "console login failed" in r.getMessage()]
    assert len(failures) == 5
    assert "peer=127.0.0.1" in failures[0].getMessage()


async def test_past_max_connections_a_request_gets_503_at_once(tmp_path: Path) -> None:
    # uvicorn's limit_concurrency, from http.max_connections (issue 17, #7).
    async with running(tmp_path, {"http": {"max_connections": 3, "read_timeout": "20s"}}) as d:
        port = d.supervisor.settings.http.port
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        try:
            for _, w in idle:
                w.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
                await w.drain()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), 5.0)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        finally:
            for _, w in idle:
                w.close()
