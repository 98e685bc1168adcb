"""Generated payloads, matchers and query strings against every public endpoint, for a
bounded number of examples: no 5xx, no crash, one dead letter per refused intake."""

from __future__ import annotations

import asyncio
import json
import resource
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.config.auth import Authenticator
from daemon.config.settings import Settings
from daemon.domain import GroupingPolicy
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import EventLog
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
