"""Hostile input cannot take the daemon down (issue 17): bounded bodies, authentication
before parsing, linear-time regexes, bounded state, tight trust.

Over real HTTP: the Supervisor runs in-process (uvicorn, SQLite) on a free port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_api import TOKENS, running

NIL = "00000000-0000-0000-0000-000000000000"

# --- 1. one body limit for every route, streamed; authentication before parsing ----------


async def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes and read what comes back within 5 s (an answer, or the server closing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5.0)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path", ["/login", "/logout", "/api/v1/silences", "/api/v1/pause", "/api/v2/alerts"]
)
async def test_a_declared_huge_body_is_refused_before_it_is_sent(
    tmp_path: Path, path: str
) -> None:
    async with running(tmp_path) as d:
        port = d.supervisor.settings.http.port
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 300000000\r\n\r\n"
        ).encode()
        # Not one byte of the 300 MB follows: the answer must come from the headers alone.
        answer = await _raw(port, head + b"{")
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"exceeds http.max_body_bytes" in answer


@pytest.mark.parametrize(
    "path", ["/api/v1/silences", "/api/v1/pause", f"/api/v1/incidents/{NIL}/ack"]
)
async def test_a_chunked_body_is_cut_off_at_the_limit(tmp_path: Path, path: str) -> None:
    async with running(tmp_path, {"http": {"max_body_bytes": 65536}}) as d:
        port = d.supervisor.settings.http.port
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"8000\r\n" + b" " * 0x8000 + b"\r\n"
        # 128 KiB sent and the body never ends: the answer must come at the limit.
        answer = await _raw(port, head + chunk * 4)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"exceeds http.max_body_bytes (65536)" in answer
        assert (await d.http.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/pause",
        "/api/v1/resume",
        f"/api/v1/actions/{NIL}/approve",
        f"/api/v1/actions/{NIL}/reject",
        "/api/v1/silences",
        f"/api/v1/incidents/{NIL}/ack",
    ],
)
async def test_a_stranger_gets_401_before_the_body_is_parsed(tmp_path: Path, path: str) -> None:
    async with running(tmp_path, TOKENS) as d:
        r = await d.http.post(path, content=b"{not json", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401, r.text
        r = await d.http.post(path, content=b"[1,2,3]")
        assert r.status_code == 401, r.text


async def test_console_forms_are_not_read_without_a_session_or_login_cookie(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, TOKENS) as d:
        port = d.supervisor.settings.http.port
        for path in ("/login", "/logout", f"/actions/{NIL}/approve"):
            # Within the global limit, but no session: refused without waiting for the body.
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 900000\r\n\r\n"
            ).encode()
            answer = await _raw(port, head + b"token=")
            assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


async def test_slack_headers_are_checked_before_the_body_is_read(tmp_path: Path) -> None:
    slack = {"notifications": {"slack_app": {"signing_secret": "s3cret"}}}
    async with running(tmp_path, slack) as d:
        port = d.supervisor.settings.http.port
        head = (
            b"POST /api/v1/slack/interactions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 900000\r\n\r\n"
        )
        answer = await _raw(port, head + b"payload=")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]

