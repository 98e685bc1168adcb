"""The HTTP API over real HTTP: the Supervisor runs in-process (uvicorn, SQLite) on a free
port with an injected clock, and the tests talk to it with httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from realstack import free_port

from daemon.config.settings import load_config
from daemon.engine.store import EventLog
from daemon.runtime.sdnotify import SystemdNotifier
from daemon.runtime.supervisor import Supervisor

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
# Just after the samples were captured, so their leases (endsAt) are still running.
T0 = datetime(2026, 11, 28, 23, 27, 6, tzinfo=UTC)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} fired"}}


class Clock:
    """The daemon's clock, moved only by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Daemon:
    """A running Supervisor and an HTTP client pointed at it."""

    supervisor: Supervisor
    http: httpx.AsyncClient
    clock: Clock
    store: str

    async def tick(self) -> None:
        """Let the daemon see the (advanced) clock: lease expiry, closing, silence ends."""
        assert self.supervisor.ingestor is not None
        await self.supervisor.ingestor.tick()

    async def incidents(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.http.get("/api/v1/incidents", params=params)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["incidents"]
        return found

    async def post_alerts(self, *alerts: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/api/v2/alerts", json=list(alerts))


@asynccontextmanager
async def running(
    tmp_path: Path, settings: dict[str, Any] | None = None, token: str | None = None
) -> AsyncIterator[Daemon]:
    """Start the daemon in this event loop; stop it (SIGTERM path) on exit."""
    config: dict[str, Any] = {
        "store": f"sqlite:///{tmp_path}/events.db",
        "state_dir": str(tmp_path),
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        # Time moves only when a test says so; ticks come from `Daemon.tick`.
        "tuning": {"tick_interval": "1h"},
    }
    for key, value in (settings or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "watchkeeper.yaml"
    path.write_text(yaml.safe_dump(config))
    clock = Clock(T0)
    sup = Supervisor(load_config(path), path, clock=clock, notifier=SystemdNotifier({}))
    task = asyncio.create_task(sup.run(), name="supervisor")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = f"http://{config['http']['listen']}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for _ in range(600):
            if task.done():
                task.result()
                raise RuntimeError("the daemon stopped during start-up")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("daemon not ready after 30s")
        try:
            yield Daemon(sup, http, clock, config["store"])
        finally:
            sup.stop.set()
            await asyncio.wait_for(task, 60)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running(tmp_path) as d:
        yield d


def read_log(store: str) -> list[Any]:
    """Every committed event, read through a second, independent EventLog."""
    log = EventLog(store)
    try:
        return [rec.event for rec in log.read(0, 10_000)]
    finally:
        log.close()


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- intake -------------------------------------------------------------------------------


async def test_v2_sample_is_committed_before_the_200(daemon: Daemon) -> None:
    r = await daemon.http.post(
        "/api/v2/alerts",
        content=sample("000_api_v2_alerts.json"),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert r.content == b""  # as Alertmanager answers Prometheus
    # Right after the 200, another reader of the same file sees the events. (Reactions,
    # such as an investigation starting, may have appended theirs after them already.)
    events = await asyncio.to_thread(read_log, daemon.store)
    assert names(events[:2]) == ["IncidentOpened", "AlertFired"]
    opened, fired = events[:2]
    assert fired.originator_id == opened.originator_id
    assert fired.alert.fingerprint == "394877885937e4c3"
    assert fired.alert.ends_at == datetime(2026, 11, 28, 23, 27, 9, 928000, tzinfo=UTC)
    [inc] = await daemon.incidents()
    assert (inc["title"], inc["state"], inc["severity"]) == (
        "HighScrapeDuration",
        "open",
        "warning",
    )


async def test_webhook_samples_open_then_resolve(daemon: Daemon) -> None:
    r = await daemon.http.post(
        "/api/v1/webhook/alertmanager", content=sample("002_api_v1_webhook_alertmanager.json")
    )
    assert r.status_code == 200
    assert r.json() == {"status": "success", "alerts": 1, "events": 2}
    r = await daemon.http.post(
        "/api/v1/webhook/alertmanager", content=sample("003_api_v1_webhook_alertmanager.json")
    )
    assert r.json()["events"] == 2
    assert {i["title"] for i in await daemon.incidents(state="open")} == {
        "HighScrapeDuration",
        "TargetUp",
    }
    r = await daemon.http.post(
        "/api/v1/webhook/alertmanager", content=sample("008_api_v1_webhook_alertmanager.json")
    )
    assert r.json() == {"status": "success", "alerts": 1, "events": 2}
    [resolved] = await daemon.incidents(state="resolved")
    assert resolved["title"] == "HighScrapeDuration"
    # Hearing the same webhook again changes nothing and stores nothing.
    r = await daemon.http.post(
        "/api/v1/webhook/alertmanager", content=sample("008_api_v1_webhook_alertmanager.json")
    )
    assert r.json()["events"] == 0


async def test_the_same_alert_via_prometheus_and_alertmanager_is_one_alert(daemon: Daemon) -> None:
    await daemon.http.post("/api/v2/alerts", content=sample("000_api_v2_alerts.json"))
    await daemon.http.post(
        "/api/v1/webhook/alertmanager", content=sample("002_api_v1_webhook_alertmanager.json")
    )
    [inc] = await daemon.incidents()
    assert (inc["alerts_total"], inc["firing"]) == (1, 1)


async def test_unknown_webhook_fields_are_ignored(daemon: Daemon) -> None:
    raw = json.loads(sample("002_api_v1_webhook_alertmanager.json"))
    raw["someFutureField"] = {"x": [1, 2, 3]}
    raw["alerts"][0]["anotherOne"] = True
    r = await daemon.http.post("/api/v1/webhook/alertmanager", json=raw)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 2


BAD_INTAKE = [
    ("/api/v2/alerts", b'[{"labels": {"alertname": "X"}', "alerts: malformed JSON"),
    ("/api/v2/alerts", b'{"labels": {"alertname": "X"}}', "alerts: Input should be a valid array"),
    (
        "/api/v2/alerts",
        b'[{"labels": {"alertname": "X", "replica": 2}}]',
        "alerts[0].labels.replica: Input should be a valid string",
    ),
    ("/api/v2/alerts", b'[{"annotations": {}}]', "alerts[0].labels: required field is missing"),
    (
        "/api/v2/alerts",
        b'[{"labels": {"job": "node"}}]',
        "alerts[0].labels: an alertname label is required",
    ),
    ("/api/v1/webhook/alertmanager", b"{not json", "body: malformed JSON"),
    (
        "/api/v1/webhook/alertmanager",
        b'{"version": "4", "alerts": [{"status": "firing", "labels": {}}]}',
        "alerts[0].labels: an alertname label is required",
    ),
]


async def test_bad_payloads_get_400_with_the_reason_and_a_dead_letter(daemon: Daemon) -> None:
    for path, body, problem in BAD_INTAKE:
        r = await daemon.http.post(path, content=body)
        assert r.status_code == 400, (path, body)
        reply = r.json()
        assert reply["error"].startswith("invalid payload: ")
        assert problem in reply["error"], reply
        assert any(p.startswith(problem) for p in reply["problems"])
        newest = (await daemon.http.get("/api/v1/dead-letters")).json()["dead_letters"][0]
        assert problem in newest["reason"]
        assert newest["payload"] == body.decode()
        assert newest["size"] == len(body)
        assert newest["source"] == ("api_v2" if "v2" in path else "alertmanager")
    letters = (await daemon.http.get("/api/v1/dead-letters")).json()["dead_letters"]
    assert len(letters) == len(BAD_INTAKE)
    # Refused input opened nothing.
    assert await daemon.incidents() == []
    events = await asyncio.to_thread(read_log, daemon.store)
    assert set(names(events)) == {"DeadLetterRecorded"}


async def test_oversized_body_gets_413_and_a_capped_dead_letter(tmp_path: Path) -> None:
    async with running(tmp_path, {"http": {"max_body_bytes": 1024}}) as d:
        big = json.dumps([alert("Big", n=str(i)) for i in range(200)]).encode()
        assert len(big) > 8192
        r = await d.http.post("/api/v2/alerts", content=big)
        assert r.status_code == 413
        assert r.json()["error"] == f"body of {len(big)} bytes exceeds http.max_body_bytes (1024)"
        [letter] = (await d.http.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert letter["size"] == len(big)
        assert len(letter["payload"].encode()) <= 4096
        assert big.decode().startswith(letter["payload"])

        # Without a Content-Length (chunked), the limit holds while reading.
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 512):
                yield big[i : i + 512]

        r = await d.http.post("/api/v1/webhook/alertmanager", content=chunks())
        assert r.status_code == 413
        assert "exceeds http.max_body_bytes (1024)" in r.json()["error"]
        newest = (await d.http.get("/api/v1/dead-letters")).json()["dead_letters"][0]
        assert newest["source"] == "alertmanager"
        assert len(newest["payload"].encode()) <= 4096
        # A body within the limit is still fine.
        r = await d.post_alerts(alert("Small"))
        assert r.status_code == 200
        assert [i["title"] for i in await d.incidents()] == ["Small"]


# --- incidents ----------------------------------------------------------------------------


async def test_incident_list_filters_by_state_and_matchers(daemon: Daemon) -> None:
    r = await daemon.post_alerts(
        alert("DiskFull", severity="critical", instance="db1"),
        alert("HighLatency", severity="warning", instance="web1"),
    )
    assert r.status_code == 200
    disk = next(i for i in await daemon.incidents() if i["title"] == "DiskFull")
    assert (await daemon.http.post(f"/api/v1/incidents/{disk['id']}/ack")).status_code == 200

    async def titles(**params: Any) -> list[str]:
        return sorted(i["title"] for i in await daemon.incidents(**params))

    assert await titles() == ["DiskFull", "HighLatency"]
    assert await titles(state="open") == ["HighLatency"]
    assert await titles(state="acknowledged") == ["DiskFull"]
    assert await titles(state=["open", "acknowledged"]) == ["DiskFull", "HighLatency"]
    assert await titles(state="closed") == []
    # Matchers apply to the group labels and to the labels of the incident's alerts.
    assert await titles(match='severity="critical"') == ["DiskFull"]
    assert await titles(match='instance=~"web.*"') == ["HighLatency"]
    assert await titles(match=['alertname=~"Disk.*|High.*"', "severity!=critical"]) == [
        "HighLatency"
    ]
    assert await titles(match="alertname=Nothing") == []
    r = await daemon.http.get("/api/v1/incidents", params={"match": "not a matcher"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("match: bad matcher 'not a matcher'")


async def test_incident_detail_has_the_full_timeline(daemon: Daemon) -> None:
    await daemon.post_alerts(alert("DiskFull", instance="db1"))
    [inc] = await daemon.incidents()
    await daemon.http.post(f"/api/v1/incidents/{inc['id']}/ack", json={"comment": "on it"})
    detail = (await daemon.http.get(f"/api/v1/incidents/{inc['id']}")).json()
    assert detail["id"] == inc["id"]
    assert detail["state"] == "acknowledged"
    assert [e["type"] for e in detail["timeline"]] == [
        "IncidentOpened",
        "AlertFired",
        "IncidentAcknowledged",
    ]
    assert [e["version"] for e in detail["timeline"]] == [1, 2, 3]
    assert detail["timeline"][2]["data"] == {"by": "local", "comment": "on it"}
    [a] = detail["alerts"]
    assert a["labels"] == {"alertname": "DiskFull", "instance": "db1"}
    assert a["ends_at"] == (T0 + timedelta(minutes=5)).isoformat()

    # Resolved, then closed after the reopen window: still shown, with the whole story.
    await daemon.http.post(f"/api/v1/incidents/{inc['id']}/resolve")
    daemon.clock.advance(timedelta(minutes=31))
    await daemon.tick()
    assert await daemon.incidents() == []
    [closed] = await daemon.incidents(state="closed")
    assert closed["id"] == inc["id"]
    detail = (await daemon.http.get(f"/api/v1/incidents/{inc['id']}")).json()
    assert detail["state"] == "closed"
    assert detail["timeline"][-1]["type"] == "IncidentClosed"


async def test_a_resolve_while_the_alert_fires_reopens_when_it_keeps_firing(
    daemon: Daemon,
) -> None:
    # As Prometheus sends it: the same startsAt on every evaluation while it fires.
    firing = {**alert("DiskFull"), "startsAt": T0.isoformat()}
    await daemon.post_alerts(firing)
    [inc] = await daemon.incidents()
    url = f"/api/v1/incidents/{inc['id']}"
    r = await daemon.http.post(f"{url}/resolve", json={"comment": "looks fine"})
    assert r.json()["state"] == "resolved"
    # Inside the grace period a re-send is only a renewal.
    daemon.clock.advance(timedelta(minutes=2))
    assert (await daemon.post_alerts(firing)).status_code == 200
    assert (await daemon.http.get(url)).json()["state"] == "resolved"
    daemon.clock.advance(timedelta(minutes=3))
    assert (await daemon.post_alerts(firing)).status_code == 200
    detail = (await daemon.http.get(url)).json()
    assert (detail["state"], detail["reopen_count"]) == ("open", 1)
    assert detail["timeline"][-1]["type"] == "IncidentReopened"
    assert "still firing 5m after local resolved it" in detail["timeline"][-1]["data"]["reason"]


async def test_unknown_and_malformed_incident_ids(daemon: Daemon) -> None:
    missing = uuid4()
    r = await daemon.http.get(f"/api/v1/incidents/{missing}")
    assert (r.status_code, r.json()) == (404, {"error": f"no incident {missing}"})
    r = await daemon.http.get("/api/v1/incidents/not-a-uuid")
    assert r.status_code == 422
    assert r.json()["error"].startswith("invalid request: path.incident_id: ")


async def test_ack_and_resolve_with_refusals(daemon: Daemon) -> None:
    await daemon.post_alerts(alert("DiskFull"))
    [inc] = await daemon.incidents()
    url = f"/api/v1/incidents/{inc['id']}"
    r = await daemon.http.post(f"{url}/ack", json={"comment": "mine"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("acknowledged", "local")
    r = await daemon.http.post(f"{url}/ack")
    assert (r.status_code, r.json()) == (409, {"error": "incident already acknowledged by local"})
    r = await daemon.http.post(f"{url}/resolve", json={"comment": "disk cleaned"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["resolved_by"]) == ("resolved", "local")
    r = await daemon.http.post(f"{url}/resolve")
    assert (r.status_code, r.json()) == (409, {"error": "incident is already resolved"})
    r = await daemon.http.post(f"{url}/ack")
    assert r.status_code == 409
    assert r.json()["error"] == "incident is resolved; only an open incident can be acknowledged"
    for action in ("ack", "resolve"):
        missing = uuid4()
        r = await daemon.http.post(f"/api/v1/incidents/{missing}/{action}")
        assert r.status_code == 404
        assert r.json()["error"] == f"no incident {missing} in the hot set (closed or unknown)"
    r = await daemon.http.post(f"{url}/ack", json={"comment": 5})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid request body: comment: Input should be a valid string"


# --- silences -----------------------------------------------------------------------------


async def test_silences_create_list_delete_and_effect(daemon: Daemon) -> None:
    r = await daemon.http.post(
        "/api/v1/silences",
        json={"matchers": ["alertname=Noisy"], "duration": "2h", "comment": "maintenance"},
    )
    assert r.status_code == 200, r.text
    sid = r.json()["silenceID"]
    # Alertmanager's matcher objects work too.
    r = await daemon.http.post(
        "/api/v1/silences",
        json={
            "matchers": [{"name": "instance", "value": "web.*", "isRegex": True}],
            "startsAt": (T0 + timedelta(hours=1)).isoformat(),
            "endsAt": (T0 + timedelta(hours=2)).isoformat(),
            "createdBy": "alice",
        },
    )
    assert r.status_code == 200, r.text
    listed = {s["id"]: s for s in (await daemon.http.get("/api/v1/silences")).json()["silences"]}
    assert listed[sid]["state"] == "active"
    assert listed[sid]["matchers"] == ['alertname="Noisy"']
    assert listed[sid]["created_by"] == "local"
    assert listed[sid]["ends_at"] == (T0 + timedelta(hours=2)).isoformat()
    other = listed[r.json()["silenceID"]]
    # The caller as authenticated (here the loopback user), not the createdBy it claims.
    assert (other["state"], other["matchers"], other["created_by"]) == (
        "pending",
        ['instance=~"web.*"'],
        "local",
    )

    # A silenced alert is recorded but opens nothing.
    assert (await daemon.post_alerts(alert("Noisy", instance="db1"))).status_code == 200
    assert await daemon.incidents() == []
    events = (await daemon.http.get("/api/v1/events")).json()["events"]
    [silenced] = [e for e in events if e["type"] == "AlertSilenced"]
    assert silenced["data"]["silence_ids"] == [sid]

    r = await daemon.http.delete(f"/api/v1/silences/{sid}")
    assert (r.status_code, r.json()) == (200, {"status": "success"})
    listed = {s["id"]: s for s in (await daemon.http.get("/api/v1/silences")).json()["silences"]}
    assert listed[sid]["state"] == "expired"
    # The alert is still firing (its lease runs 5m): on the next tick it opens an incident.
    await daemon.tick()
    [inc] = await daemon.incidents()
    assert inc["title"] == "Noisy"
    r = await daemon.http.delete(f"/api/v1/silences/{sid}")
    assert (r.status_code, r.json()) == (409, {"error": "silence already expired"})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"matchers": []}, "invalid request body: matchers: List should have at least 1 item"),
        ({"matchers": ['alertname=~".*"']}, "a silence that matches every alert is refused"),
        ({"matchers": ["just words"]}, "invalid silence: bad matcher 'just words'"),
        ({"matchers": ["a=x"], "duration": "forever"}, "invalid silence: expected a duration"),
        (
            {
                "matchers": ["a=x"],
                "startsAt": T0.isoformat(),
                "endsAt": (T0 - timedelta(minutes=1)).isoformat(),
            },
            "endsAt must be after startsAt",
        ),
    ],
)
async def test_bad_silences_are_refused(daemon: Daemon, body: dict[str, Any], error: str) -> None:
    r = await daemon.http.post("/api/v1/silences", json=body)
    assert r.status_code == 422
    assert error in r.json()["error"]
    assert (await daemon.http.get("/api/v1/silences")).json()["silences"] == []


async def test_deleting_an_unknown_silence(daemon: Daemon) -> None:
    missing = uuid4()
    r = await daemon.http.delete(f"/api/v1/silences/{missing}")
    assert (r.status_code, r.json()) == (404, {"error": f"no silence {missing}"})


# --- the raw log --------------------------------------------------------------------------


async def test_events_are_paged_with_after_and_next(daemon: Daemon) -> None:
    for i in range(5):
        await daemon.post_alerts(alert(f"A{i}"))
    everything = (await daemon.http.get("/api/v1/events", params={"limit": 1000})).json()
    kinds = [e["type"] for e in everything["events"]]
    assert (kinds.count("IncidentOpened"), kinds.count("AlertFired")) == (5, 5)
    positions = [e["position"] for e in everything["events"]]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert everything["next"] == positions[-1]
    paged: list[int] = []
    after = 0
    while True:
        page = (await daemon.http.get("/api/v1/events", params={"after": after, "limit": 3})).json()
        if not page["events"]:
            assert page["next"] == after
            break
        assert len(page["events"]) <= 3
        paged += [e["position"] for e in page["events"]]
        after = page["next"]
    # Reactions may still be appending: paging saw at least the same log, in the same order.
    assert paged[: len(positions)] == positions
    first = everything["events"][0]
    assert first["type"] == "IncidentOpened"
    assert first["data"]["group_key"] == '{alertname="A0"}'
    r = await daemon.http.get("/api/v1/events", params={"after": -1})
    assert (r.status_code, r.json()) == (400, {"error": "after: must be >= 0"})


# --- health and metrics -------------------------------------------------------------------


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_health_readiness_and_metrics(daemon: Daemon) -> None:
    r = await daemon.http.get("/healthz")
    assert r.status_code == 200
    assert r.json()["healthy"] is True
    r = await daemon.http.get("/readyz")
    assert (r.status_code, r.text) == (200, "ready\n")
    # A lone daemon on SQLite leads: a load balancer checking /leaderz must not drop it.
    r = await daemon.http.get("/leaderz")
    assert (r.status_code, r.text) == (200, "leader: the only daemon on this store\n")

    await daemon.post_alerts(alert("DiskFull"), alert("HighLatency"))
    await daemon.http.post("/api/v2/alerts", content=b"[{}]")
    m = metric_samples((await daemon.http.get("/metrics")).text)
    assert m[("watchkeeper_alerts_received_total", (("source", "api_v2"),))] == 2
    assert m[("watchkeeper_dead_letters_total", (("source", "api_v2"),))] == 1
    assert (
        m[("watchkeeper_alerts_rejected_total", (("reason", "invalid"), ("source", "api_v2")))] == 1
    )
    assert m[("watchkeeper_incidents", (("state", "open"),))] == 2
    assert m[("watchkeeper_incidents", (("state", "acknowledged"),))] == 0
    # At least two commits: the alerts, then the dead letter (reactions may add more).
    assert m[("watchkeeper_store_write_seconds_count", ())] >= 2
    assert m[("watchkeeper_store_write_seconds_sum", ())] > 0

    status = (await daemon.http.get("/api/v1/status")).json()
    assert status["incidents"] == {"open": 2}
    assert status["alerts_firing"] == 2
    assert status["dead_letters"] == 1


# --- auth ---------------------------------------------------------------------------------

TOKENS = {
    "auth": {
        "tokens": [
            {"name": "vera", "role": "viewer", "token": "viewer-token"},
            {"name": "rory", "role": "responder", "token": "responder-token"},
            {"name": "ada", "role": "admin", "token": "admin-token"},
        ],
        "ingest_token": "ingest-token",
    },
    "http": {"ingest_auth": "token"},
}
SOME_ID = uuid4()
PROTECTED = [
    ("GET", "/api/v1/incidents", "viewer"),
    ("GET", f"/api/v1/incidents/{SOME_ID}", "viewer"),
    ("POST", f"/api/v1/incidents/{SOME_ID}/ack", "responder"),
    ("POST", f"/api/v1/incidents/{SOME_ID}/resolve", "responder"),
    ("GET", "/api/v1/silences", "viewer"),
    ("POST", "/api/v1/silences", "responder"),
    ("DELETE", f"/api/v1/silences/{SOME_ID}", "responder"),
    ("GET", "/api/v1/events", "viewer"),
    ("GET", "/api/v1/dead-letters", "viewer"),
    ("GET", "/api/v1/status", "viewer"),
    ("POST", "/api/v2/alerts", "ingest"),
    ("POST", "/api/v1/webhook/alertmanager", "ingest"),
]


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running(tmp_path, TOKENS) as d:
        yield d


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_endpoint_needs_a_valid_token(guarded: Daemon) -> None:
    for method, path, _ in PROTECTED:
        r = await guarded.http.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["error"], (method, path, r.json())
        r = await guarded.http.request(method, path, headers=bearer("not-a-real-token"))
        assert (r.status_code, r.json()) == (401, {"error": "unknown bearer token"}), (method, path)
        r = await guarded.http.request(method, path, headers={"Authorization": "Basic dXNlcg=="})
        assert r.status_code == 401, (method, path)
        assert "expected 'Bearer <token>'" in r.json()["error"]
    # Probes and scrapes stay open for systemd and Prometheus.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await guarded.http.get(path)).status_code == 200, path


async def test_roles_are_enforced(guarded: Daemon) -> None:
    http = guarded.http
    # A viewer reads everything but changes nothing.
    for method, path, needs in PROTECTED:
        r = await http.request(method, path, headers=bearer("viewer-token"), json=[])
        if needs == "viewer":
            assert r.status_code in (200, 404), (method, path, r.text)
        else:
            assert r.status_code == 403, (method, path)
            assert r.json()["error"].startswith("vera has role viewer;"), r.json()
    r = await http.post(f"/api/v1/incidents/{SOME_ID}/ack", headers=bearer("viewer-token"))
    assert r.json()["error"] == "vera has role viewer; this needs role responder or higher"

    # The ingest token may post alerts, and only that.
    r = await http.post("/api/v2/alerts", json=[alert("DiskFull")], headers=bearer("ingest-token"))
    assert r.status_code == 200
    r = await http.get("/api/v1/incidents", headers=bearer("ingest-token"))
    assert r.status_code == 401
    r = await http.post("/api/v2/alerts", json=[alert("DiskFull")])
    assert r.status_code == 401
    assert "ingestion needs a bearer token" in r.json()["error"]

    # A responder acts; an admin may do anything, ingestion included.
    [inc] = (await http.get("/api/v1/incidents", headers=bearer("viewer-token"))).json()[
        "incidents"
    ]
    r = await http.post(f"/api/v1/incidents/{inc['id']}/ack", headers=bearer("responder-token"))
    assert (r.status_code, r.json()["acknowledged_by"]) == (200, "rory")
    r = await http.post(
        "/api/v1/silences", json={"matchers": ["alertname=X"]}, headers=bearer("responder-token")
    )
    assert r.status_code == 200
    r = await http.post("/api/v2/alerts", json=[alert("Other")], headers=bearer("admin-token"))
    assert r.status_code == 200
    r = await http.post(f"/api/v1/incidents/{inc['id']}/resolve", headers=bearer("admin-token"))
    assert (r.status_code, r.json()["resolved_by"]) == (200, "ada")


async def test_loopback_ingestion_needs_no_token_by_default(tmp_path: Path) -> None:
    settings = {"auth": TOKENS["auth"]}  # tokens, but http.ingest_auth stays "loopback"
    async with running(tmp_path, settings) as d:
        assert (await d.post_alerts(alert("DiskFull"))).status_code == 200
        assert (await d.http.get("/api/v1/incidents")).status_code == 401


# --- working an incident: verbs, the whole story, the postmortem export ------------------


async def test_incident_verbs_are_events_with_who_and_where(daemon: Daemon) -> None:
    await daemon.post_alerts(alert("DiskFull", severity="warning"))
    [inc] = await daemon.incidents()
    url = f"/api/v1/incidents/{inc['id']}"
    steps: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("ack", {}, {"state": "acknowledged"}),
        ("note", {"text": "disk at 95%, cleaning /var/log", "via": "cli"}, {"notes": 1}),
        ("take", {}, {"assignee": "local"}),
        ("assign", {"assignee": "bob"}, {"assignee": "bob"}),
        ("unack", {"reason": "handing over"}, {"state": "open", "acknowledged_by": ""}),
        ("snooze", {"for": "30m"}, {"snoozed_until": "2026-11-28T23:57:06Z"}),
        ("severity", {"severity": "critical", "reason": "users see it"}, {"severity": "critical"}),
        ("resolve", {}, {"state": "resolved"}),
        ("reopen", {"reason": "not fixed"}, {"state": "open", "reopen_count": 1}),
    ]
    for verb, body, expect in steps:
        r = await daemon.http.post(f"{url}/{verb}", json=body)
        assert r.status_code == 200, (verb, r.text)
        assert {k: r.json()[k] for k in expect} == expect, verb
    # Refusals say why.
    r = await daemon.http.post(f"{url}/severity", json={"severity": "urgent"})
    assert (r.status_code, r.json()["error"]) == (
        422,
        "severity must be one of critical, error, warning, info, none",
    )
    r = await daemon.http.post(f"{url}/snooze", json={})
    assert r.status_code == 422
    assert "either `until`" in r.json()["error"]
    r = await daemon.http.post(f"{url}/note", json={"text": ""})
    assert r.status_code == 422
    detail = (await daemon.http.get(url)).json()
    kinds = [e["type"] for e in detail["timeline"]]
    assert kinds[-8:] == [
        "IncidentNoted",
        "IncidentAssigned",
        "IncidentAssigned",
        "IncidentUnacknowledged",
        "IncidentSnoozed",
        "IncidentSeverityChanged",
        "IncidentResolved",
        "IncidentReopened",
    ]
    noted = next(e for e in detail["timeline"] if e["type"] == "IncidentNoted")
    assert noted["data"] == {
        "by": "local",
        "channel": "cli",
        "text": "disk at 95%, cleaning /var/log",
    }
    assert noted["at"] == "2026-11-28T23:27:06Z"
    texts = [row["text"] for row in detail["story"]]
    assert "Note by local via cli" in texts
    assert "Severity warning → critical by local via api" in texts
    assert detail["people"] == ["local"]
    assert detail["figures"]["time_to_acknowledge"] == 0.0
    # The log holds them under their registered names.
    stored = names(read_log(daemon.store))
    assert {"IncidentNoted", "IncidentSnoozed", "IncidentSeverityChanged"} <= set(stored)


async def test_postmortem_export_as_markdown_and_json(daemon: Daemon) -> None:
    await daemon.post_alerts(alert("DiskFull", instance="db1"))
    [inc] = await daemon.incidents()
    url = f"/api/v1/incidents/{inc['id']}"
    daemon.clock.advance(timedelta(minutes=3))
    await daemon.http.post(f"{url}/ack")
    await daemon.http.post(f"{url}/note", json={"text": "rotated | the logs"})
    daemon.clock.advance(timedelta(minutes=7))
    await daemon.http.post(f"{url}/resolve")
    r = await daemon.http.get(f"{url}/export", params={"format": "markdown"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith("# DiskFull (resolved)\n")
    assert "- Time to acknowledge: 3m" in md
    assert "- Time to resolve: 10m" in md
    assert "- People: local" in md
    assert "| Note by local via api | rotated \\| the logs |" in md
    r = await daemon.http.get(f"{url}/export", params={"format": "json"})
    data = r.json()
    assert data["figures"]["time_to_resolve"] == 600.0
    assert data["id"] == inc["id"]
    r = await daemon.http.get(f"{url}/export", params={"format": "pdf"})
    assert r.status_code == 422


async def test_outcome_figures_from_the_log_and_on_metrics(daemon: Daemon) -> None:
    await daemon.post_alerts(alert("DiskFull", service="db", severity="critical"))
    await daemon.post_alerts(alert("WebSlow", service="web", severity="warning"))
    incs = {i["title"]: i for i in await daemon.incidents()}
    daemon.clock.advance(timedelta(minutes=3))
    await daemon.http.post(f"/api/v1/incidents/{incs['DiskFull']['id']}/ack")
    daemon.clock.advance(timedelta(minutes=2))
    await daemon.http.post(f"/api/v1/incidents/{incs['DiskFull']['id']}/resolve")
    r = await daemon.http.get("/api/v1/stats", params={"by": "service", "since": "1h"})
    assert r.status_code == 200, r.text
    groups = r.json()["groups"]
    assert set(groups) == {"db", "web"}
    assert groups["db"]["time_to_acknowledge"] == {
        "count": 1,
        "mean": 180.0,
        "p50": 180.0,
        "p90": 180.0,
    }
    assert groups["db"]["time_to_resolve"]["p50"] == 300.0
    assert groups["web"]["time_to_acknowledge"]["count"] == 0
    # Later requests continue the fold from where it stopped.
    await daemon.http.post(f"/api/v1/incidents/{incs['WebSlow']['id']}/ack")
    r = await daemon.http.get("/api/v1/stats", params={"by": "severity"})
    assert r.json()["groups"]["warning"]["time_to_acknowledge"]["p50"] == 300.0
    r = await daemon.http.get("/api/v1/stats", params={"since": "last tuesday"})
    assert r.status_code == 422
    assert "neither a duration" in r.json()["error"]
    metrics = (await daemon.http.get("/metrics")).text
    assert 'watchkeeper_time_to_acknowledge_seconds_count{severity="critical"} 1.0' in metrics
    assert (
        'watchkeeper_time_to_acknowledge_seconds_bucket{le="300.0",severity="critical"} 1.0'
        in metrics
    )
    assert (
        'watchkeeper_time_to_acknowledge_seconds_bucket{le="120.0",severity="critical"} 0.0'
        in metrics
    )
    assert 'watchkeeper_time_to_resolve_seconds_count{severity="critical"} 1.0' in metrics
