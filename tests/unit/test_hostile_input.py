"""Hostile input cannot take the daemon down (issue 17): bounded bodies, authentication
before parsing, linear-time regexes, bounded state, tight trust.

Over real HTTP: the Supervisor runs in-process (uvicorn, SQLite) on a free port."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_api import TOKENS, running

from daemon.domain.matchers import MAX_PATTERN, Matcher

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


# --- 2. linear-time regexes ---------------------------------------------------------------

EVIL = "(.*.*)*x"


def test_a_catastrophic_regex_answers_at_once() -> None:
    # Python's re needs ~18 s for 16 characters and doubles per character; RE2 is linear.
    m = Matcher.parse(f'alertname=~"{EVIL}"')
    started = time.perf_counter()
    assert not m.matches({"alertname": "a" * 40})
    assert m.matches({"alertname": "a" * 40 + "x"})
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("matcher", "value", "hit"),
    [
        ('a=~"(?i)disk.*"', "DiskFull", True),  # Go's flags: Python's re gave a 500 here
        ('a=~"foo"', "foo\n", False),  # anchored at the very end, as Go's $ is
        ('a=~"x|y"', "xy", False),  # the whole value, not a prefix
        ('a=~"f.o"', "f\no", False),
        ('a!~"(?i)prod"', "PROD", False),
        ('a=~"\\d+"', "123", True),
    ],
)
def test_regexes_follow_alertmanager(matcher: str, value: str, hit: bool) -> None:
    assert Matcher.parse(matcher).matches({"a": value}) is hit


@pytest.mark.parametrize(
    "text", ['a=~"' + "x" * (MAX_PATTERN + 1) + '"', 'a=~"(?=x)"', 'a=~"(x"', 'a=~"\\1"']
)
def test_overlong_and_non_go_regexes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="regular expression"):
        Matcher.parse(text)


async def test_a_viewers_evil_match_query_does_not_block_the_daemon(tmp_path: Path) -> None:
    async with running(tmp_path) as d:
        name = "a" * 24  # 2^24 steps for backtracking: minutes
        assert (await d.post_alerts({"labels": {"alertname": name}})).status_code == 200
        started = time.perf_counter()
        r = await d.http.get("/api/v1/incidents", params={"match": f'alertname=~"{EVIL}"'})
        assert r.status_code == 200, r.text
        assert r.json()["incidents"] == []
        r = await d.http.get("/api/v1/incidents", params={"match": 'alertname=~"(?i)A+"'})
        assert [i["title"] for i in r.json()["incidents"]] == [name]
        assert time.perf_counter() - started < 2
        r = await d.http.get("/api/v1/incidents", params={"match": "a=~" + "x" * 5000})
        assert r.status_code == 400, r.text


async def test_an_evil_silence_does_not_stall_the_writer(tmp_path: Path) -> None:
    async with running(tmp_path) as d:
        r = await d.http.post(
            "/api/v1/silences",
            json={"matchers": [f'alertname=~"{EVIL}"', 'team="x"'], "duration": "1h"},
        )
        assert r.status_code == 200, r.text
        started = time.perf_counter()
        r = await d.post_alerts(
            *({"labels": {"alertname": "b" * 26, "n": str(i)}} for i in range(20))
        )
        assert r.status_code == 200
        assert time.perf_counter() - started < 3


# --- 3. bounded state ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "annotations", "why"),
    [
        ({"alertname": "X", **{f"l{i}": "v" for i in range(65)}}, {}, "limits.max_labels"),
        ({"alertname": "X", "big": "v" * 900_000}, {}, "limits.max_label_value_bytes"),
        ({"alertname": "X", "n" * 300: "v"}, {}, "limits.max_label_name_bytes"),
        ({"alertname": "X"}, {"description": "d" * 20_000}, "max_annotation_value_bytes"),
        ({"alertname": "X", "": "v"}, {}, "not a valid label name"),
        ({"alertname": "X", "a b": "v"}, {}, "not a valid label name"),
        ({"alertname": "X", "a\x00": "v"}, {}, "not a valid label name"),
    ],
)
async def test_an_alert_over_a_limit_is_refused_and_dead_lettered(
    tmp_path: Path, labels: dict[str, str], annotations: dict[str, str], why: str
) -> None:
    async with running(tmp_path) as d:
        for path, body in (
            ("/api/v2/alerts", [{"labels": labels, "annotations": annotations}]),
            (
                "/api/v1/webhook/alertmanager",
                {"alerts": [{"status": "firing", "labels": labels, "annotations": annotations}]},
            ),
        ):
            r = await d.http.post(path, json=body)
            assert r.status_code == 400, r.text
            assert why in r.json()["error"]
        letters = (await d.http.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert len(letters) == 2
        assert await d.incidents() == []


async def test_a_lease_in_year_9999_is_cut_to_the_ceiling(tmp_path: Path) -> None:
    async with running(tmp_path) as d:
        r = await d.post_alerts(
            {"labels": {"alertname": "Forever"}, "endsAt": "9999-12-31T00:00:00Z"}
        )
        assert r.status_code == 200, r.text
        [inc] = await d.incidents()
        r = await d.http.get(f"/api/v1/incidents/{inc['id']}")
        ends = datetime.fromisoformat(r.json()["alerts"][0]["ends_at"])
        assert ends <= d.clock.now + timedelta(days=7)
        # A start in year 9999 is a client's mistake: 400, never a 500.
        r = await d.post_alerts(
            {"labels": {"alertname": "Later"}, "startsAt": "9999-12-31T00:00:00Z"}
        )
        assert r.status_code == 400, r.text


async def test_incidents_are_listed_one_page_at_a_time(tmp_path: Path) -> None:
    async with running(tmp_path, {"limits": {"page_size": 40}}) as d:
        r = await d.post_alerts(*({"labels": {"alertname": f"A{i:03d}"}} for i in range(95)))
        assert r.status_code == 200
        seen: list[str] = []
        params: dict[str, str] = {}
        pages = 0
        while True:
            r = await d.http.get("/api/v1/incidents", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["incidents"]) <= 40
            seen += [i["id"] for i in page["incidents"]]
            pages += 1
            if not page["next"]:
                break
            params = {"cursor": page["next"]}
        assert (pages, len(seen), len(set(seen))) == (3, 95, 95)
        r = await d.http.get("/api/v1/incidents", params={"limit": 5})
        assert len(r.json()["incidents"]) == 5
        r = await d.http.get("/api/v1/incidents", params={"cursor": "junk"})
        assert r.status_code == 400
        html = (await d.http.get("/")).text
        assert html.count('<tr class="state-') == 40
        assert "/?page=1" in html


# --- medium and low -----------------------------------------------------------------------


async def test_silences_record_the_caller_cap_duration_and_need_force_to_match_all(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, TOKENS) as d:
        rory = {"Authorization": "Bearer responder-token"}
        ada = {"Authorization": "Bearer admin-token"}
        r = await d.http.post(
            "/api/v1/silences",
            json={"matchers": ['alertname="X"'], "createdBy": "alice (approver)"},
            headers=rory,
        )
        assert r.status_code == 200, r.text
        [s] = (await d.http.get("/api/v1/silences", headers=rory)).json()["silences"]
        assert s["created_by"] == "rory"
        r = await d.http.post(
            "/api/v1/silences", json={"matchers": ['alertname="X"'], "duration": "400d"},
            headers=rory,
        )
        assert r.status_code == 422
        assert "limits.max_silence" in r.json()["error"]
        for body in (
            {"matchers": ['alertname=~".+"']},
            {"matchers": ['alertname=~".+"'], "force": True},
        ):
            r = await d.http.post("/api/v1/silences", json=body, headers=rory)
            assert r.status_code == 403, r.text
        r = await d.http.post(
            "/api/v1/silences", json={"matchers": ['alertname=~".+"']}, headers=ada
        )
        assert r.status_code == 403
        r = await d.http.post(
            "/api/v1/silences", json={"matchers": ['alertname=~".+"'], "force": True}, headers=ada
        )
        assert r.status_code == 200, r.text


async def test_healthz_without_login_says_only_healthy_or_not(tmp_path: Path) -> None:
    async with running(tmp_path, TOKENS) as d:
        r = await d.http.get("/healthz")
        assert r.json() == {"healthy": True}
        r = await d.http.get("/healthz", headers={"Authorization": "Bearer viewer-token"})
        assert len(r.json()) > 1
