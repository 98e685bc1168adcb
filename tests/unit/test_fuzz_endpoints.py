"""Generated payloads, matchers and query strings against every public endpoint, for a
bounded time: no 5xx, no crash, one dead letter per refused intake, RSS bounded.

The route-wide test lists the routes from the app itself; WK_FUZZ_SECONDS sets its budget."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from routekit import served_routes

from daemon.config.auth import Authenticator
from daemon.config.settings import Settings
from daemon.domain import GroupingPolicy
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import EventLog
from daemon.web import console_work
from daemon.web.app import ApiContext, create_app

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
text = st.text(max_size=40)
labels = st.dictionaries(text, text, max_size=6)
alert = st.fixed_dictionaries(
    {"labels": labels},
    optional={
        "annotations": labels,
        "startsAt": st.one_of(text, st.datetimes().map(lambda t: t.isoformat() + "Z")),
        "endsAt": st.one_of(text, st.datetimes().map(lambda t: t.isoformat() + "Z")),
        "status": st.sampled_from(["firing", "resolved", "x"]),
        "fingerprint": text,
    },
)
json_any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
    max_leaves=12,
)
matcher = st.builds(
    lambda n, op, v: f'{n}{op}"{v}"',
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.text(alphabet="().*+?|[]^$\\{}ab(?i)", max_size=20),
)
INTAKE = ["/api/v2/alerts", "/api/v1/webhook/alertmanager"]
request = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from(INTAKE), st.lists(alert, max_size=3), st.just({})),
    st.tuples(st.just("POST"), st.sampled_from(INTAKE), json_any, st.just({})),
    st.tuples(
        st.just("POST"),
        st.just("/api/v1/webhook/alertmanager"),
        st.builds(lambda a: {"alerts": a}, st.lists(alert, max_size=3)),
        st.just({}),
    ),
    st.tuples(
        st.just("GET"),
        st.just("/api/v1/incidents"),
        st.none(),
        st.fixed_dictionaries({"match": st.lists(st.one_of(matcher, text), max_size=2)}),
    ),
    st.tuples(
        st.just("GET"),
        st.sampled_from(["/api/v1/events", "/api/v1/dead-letters", "/api/v1/incidents"]),
        st.none(),
        st.dictionaries(st.sampled_from(["after", "limit", "cursor", "state"]), text),
    ),
    st.tuples(
        st.just("POST"),
        st.sampled_from(["/api/v1/silences", "/api/v1/pause", "/login", "/logout"]),
        json_any,
        st.just({}),
    ),
    st.tuples(
        st.just("POST"),
        st.just("/api/v1/silences"),
        st.builds(lambda m, d: {"matchers": m, "duration": d}, st.lists(matcher, max_size=2), text),
        st.just({}),
    ),
)


def test_generated_requests_never_get_a_5xx(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    cfg = Settings(store=f"sqlite:///{tmp_path / 'e.db'}", http={"max_body_bytes": 65536})
    log = EventLog(cfg.store)
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    loop.run_until_complete(ing.start())
    ctx = ApiContext(cfg, ing, lambda: T0, Metrics(), Authenticator(cfg), lambda: {"healthy": True})
    transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://wk")
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def send(method: str, path: str, body: Any, params: dict[str, Any]) -> None:
        before = len(ing.projections.dead_letters)
        content = None if body is None else json.dumps(body).encode()
        r = await client.request(method, path, content=content, params=params)
        assert r.status_code < 500, (method, path, body, params, r.status_code, r.text)
        if path in INTAKE and r.status_code in (400, 413):
            assert len(ing.projections.dead_letters) == before + 1, r.text

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(request)
    # Known killers, always tried: Go's (?i) (was a 500), a start in year 9999, a huge cursor.
    @example(("GET", "/api/v1/incidents", None, {"match": ['alertname=~"(?i)x"']}))
    @example(
        (
            "POST",
            "/api/v2/alerts",
            [{"labels": {"alertname": "X"}, "startsAt": "9999-12-31T00:00:00Z"}],
            {},
        )
    )
    @example(("GET", "/api/v1/events", None, {"after": "100000000000000000000"}))
    def one(req: tuple[str, str, Any, dict[str, Any]]) -> None:
        loop.run_until_complete(send(*req))

    try:
        one()
        # Nothing the generator sent can make the process hold much more (KiB on Linux).
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start
        assert grown < 200_000, f"peak RSS grew {grown} KiB"
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(ing.close())
        log.close()
        loop.close()


# --- every route the app serves, with every kind of caller and body -----------------------

FUZZ_SECONDS = float(os.environ.get("WK_FUZZ_SECONDS", "15"))
SIGNING_SECRET = "fuzz-signing-secret"
QUERY_NAMES = (
    "match", "filter", "limit", "cursor", "after", "state", "page", "format", "status",
    "incident", "silenced", "inhibited", "active", "unprocessed", "receiver", "next", "q",
)
url_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30
)
path_value = st.one_of(st.uuids().map(str), url_text.map(lambda t: quote(t, safe="")))
query = st.dictionaries(
    st.sampled_from(QUERY_NAMES),
    st.one_of(text, matcher, st.integers().map(str), st.just("1e20")),
    max_size=3,
)
body = st.one_of(
    st.none(),
    json_any.map(lambda v: ("json", json.dumps(v).encode())),
    st.lists(alert, max_size=3).map(lambda v: ("json", json.dumps(v).encode())),
    st.dictionaries(st.sampled_from(["matchers", "duration", "text", "reason", "for",
                                     "until", "severity", "assignee", "other", "comment",
                                     "incident_ids", "version", "force", "via", "id",
                                     "startsAt", "endsAt", "createdBy"]),
                    json_any, max_size=5).map(lambda v: ("json", json.dumps(v).encode())),
    st.dictionaries(text, text, max_size=5).map(lambda v: ("form", urlencode(v).encode())),
    st.binary(max_size=300).map(lambda b: ("raw", b)),
)
caller = st.sampled_from(["loopback", "stranger", "session", "slack"])


def fill(template: str, values: list[str]) -> str:
    """The path with each {parameter} replaced by the next value (a verb stays a verb)."""
    parts = []
    for i, part in enumerate(template.split("/")):
        if part == "{verb}":
            parts.append(values[i % len(values)] if i % 3 == 0 else "note")
        elif part.startswith("{"):
            parts.append(values[i % len(values)])
        else:
            parts.append(part)
    return "/".join(parts)


class PeakRss:
    """Peak RSS from now on, in KiB: VmHWM reset to the current RSS (Linux clear_refs 5),
    so earlier tests in the same process do not count."""

    def __init__(self) -> None:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.start = self._field("VmRSS")

    @staticmethod
    def _field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def grown(self) -> int:
        return self._field("VmHWM") - self.start


@pytest.mark.timeout(180)
def test_every_route_takes_generated_input_without_a_5xx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every route (listed from the app) gets generated paths, queries, bodies and callers
    for a bounded time: never a 5xx or an exception, a dead letter per refused intake, the
    daemon still takes alerts afterwards, and peak RSS stays bounded."""
    # The console's live stream ends after a moment here, not after 55 s.
    monkeypatch.setattr(console_work, "LIVE_SECONDS", 0.05)
    loop = asyncio.new_event_loop()
    cfg = Settings(
        store=f"sqlite:///{tmp_path / 'e.db'}",
        http={"max_body_bytes": 65536},
        # Small hot-set limits, so generated alerts reach them (429 and dead letters).
        limits={"max_alerts": 60, "max_open_incidents": 20, "max_alerts_per_incident": 10},
        notifications={"slack_app": {"signing_secret": SIGNING_SECRET}},
    )
    log = EventLog(cfg.store)
    ing = Ingestor(log, GroupingPolicy(limits=cfg.limits.state_limits()), lambda: T0)
    loop.run_until_complete(ing.start())
    ctx = ApiContext(cfg, ing, lambda: T0, Metrics(), Authenticator(cfg), lambda: {"healthy": True})
    app = create_app(ctx)
    table = served_routes(app)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://wk")
    stranger = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 40000)),
        base_url="http://wk",
    )

    async def setup() -> tuple[str, str]:
        r = await client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Seed"}}])
        assert r.status_code == 200, r.text
        [inc] = (await client.get("/api/v1/incidents")).json()["incidents"]
        page = (await client.get(f"/incidents/{inc['id']}")).text
        return inc["id"], page.split('name="csrf" value="')[1].split('"')[0]

    seed_id, csrf = loop.run_until_complete(setup())
    hit: set[tuple[str, str]] = set()
    rss = PeakRss()

    async def send(
        method: str, template: str, values: list[str], params: dict[str, str],
        content: tuple[str, bytes] | None, who: str,
    ) -> None:
        path = fill(template, values)
        headers: dict[str, str] = {}
        data = b""
        if content is not None:
            kind, data = content
            if kind == "form" and who == "session":
                data += b"&csrf=" + csrf.encode()
            headers["content-type"] = (
                "application/x-www-form-urlencoded" if kind == "form" else "application/json"
            )
        if who == "slack":
            ts = str(int(T0.timestamp()))
            base = b"v0:" + ts.encode() + b":" + data
            headers["x-slack-request-timestamp"] = ts
            headers["x-slack-signature"] = (
                "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
            )
        before = len(ing.projections.dead_letters)
        c = stranger if who == "stranger" else client
        r = await c.request(method, path, params=params, content=data or None, headers=headers)
        hit.add((method, template))
        assert r.status_code < 500, (method, path, params, data[:300], who, r.status_code, r.text)
        if method == "POST" and template in INTAKE and r.status_code in (400, 413):
            assert len(ing.projections.dead_letters) == before + 1, r.text

    # First every route once with hostile input of each kind, so none is left to chance.
    hostile: list[tuple[str, bytes] | None] = [
        None, ("json", b"{not json"), ("json", b"[" * 5000), ("form", b"a=%ff&&=&b"),
        ("raw", b"\x00\xff" * 100), ("json", b'{"matchers":["a=~\\"(.*.*)*x\\""]}'),
    ]
    started = time.monotonic()
    for method, template in sorted(table):
        for content in hostile:
            loop.run_until_complete(
                send(method, template, [seed_id, "x"], {"match": 'a=~"(?i)x"'}, content, "session")
            )
    assert hit == table

    swept = time.monotonic()

    @settings(
        max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        st.sampled_from(sorted(table)),
        st.lists(st.one_of(st.just(seed_id), path_value), min_size=1, max_size=3),
        query,
        body,
        caller,
    )
    def one(
        route: tuple[str, str], values: list[str], params: dict[str, str],
        content: tuple[str, bytes] | None, who: str,
    ) -> None:
        nonlocal examples
        examples += 1
        loop.run_until_complete(send(*route, values, params, content, who))

    # Bounded time: fresh runs of 50 generated requests until the budget is spent.
    examples = 0
    try:
        deadline = time.monotonic() + FUZZ_SECONDS
        while time.monotonic() < deadline:
            one()
        print(f"swept {len(table)} routes in {swept - started:.1f}s; {examples} generated")
        assert examples >= 50, f"only {examples} generated requests in {FUZZ_SECONDS}s"
        # Still alive and taking alerts (a crashed writer would refuse or hang).
        r = loop.run_until_complete(
            client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Seed"}}])
        )
        assert r.status_code == 200, r.text
        grown = rss.grown()
        assert grown < 200_000, f"peak RSS grew {grown} KiB over {examples} requests"
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(stranger.aclose())
        loop.run_until_complete(ing.close())
        log.close()
        loop.close()
