"""The event store on SQLite and PostgreSQL: the same tests, parametrized over both backends.

PostgreSQL is a private instance started once per session (tests/conftest.py), or the
machine's server as a fallback; each test gets its own schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from realstack import Watchkeeper, intake_events_after

from daemon.domain import (
    Acknowledge,
    CreateSilence,
    GroupingPolicy,
    Matcher,
    ReceiveAlert,
    RecordDeadLetter,
    World,
)
from daemon.domain.events import (
    DeadLetterRecorded,
    DomainEvent,
    IncidentOpened,
    IncidentResolved,
)
from daemon.engine.ingest import Ingestor
from daemon.engine.store import CHECKPOINT_ID, EventLog
from daemon.intake.formats import parse_postable_alerts, parse_webhook

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = GroupingPolicy(
    group_by=("alertname", "cluster"),
    resolve_timeout=timedelta(minutes=5),
    reopen_window=timedelta(minutes=30),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    with server.schema() as schema:
        yield server.url(schema)


@pytest.fixture
def event_log(store_url: str) -> Iterator[EventLog]:
    """An EventLog on the fresh store, closed afterwards."""
    log = EventLog(store_url)
    try:
        yield log
    finally:
        log.close()


class Clock:
    """A hand-driven clock for the Ingestor."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def _opened(stream: UUID, key: str = '{alertname="A"}') -> IncidentOpened:
    return IncidentOpened(
        originator_id=stream,
        originator_version=1,
        timestamp=T0,
        group_key=key,
        group_labels={"alertname": "A"},
    )


def _dead(reason: str) -> DeadLetterRecorded:
    return DeadLetterRecorded(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=T0,
        source="test",
        reason=reason,
        payload="{}",
        size=2,
    )


def _postable(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(list(alerts)).encode()


def _alert(name: str, instance: str, cluster: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": name,
            "cluster": cluster,
            "instance": instance,
            "severity": "critical",
        },
        "annotations": {"summary": f"{name} on {instance}"},
        **extra,
    }


# --- the log itself --------------------------------------------------------------------


def test_append_and_read_back_in_order(event_log: EventLog) -> None:
    a, b = uuid4(), uuid4()
    first: list[DomainEvent] = [_opened(a), _dead("one"), _opened(b, '{alertname="B"}')]
    ids1 = event_log.append(first)
    second: list[DomainEvent] = [
        IncidentResolved(originator_id=a, originator_version=2, timestamp=T0, reason="done"),
        _dead("two"),
    ]
    ids2 = event_log.append(second)

    assert len(ids1) == 3
    assert len(ids2) == 2
    assert ids1 + ids2 == sorted(ids1 + ids2)
    assert len(set(ids1 + ids2)) == 5
    assert event_log.max_id() == ids2[-1]

    everything = event_log.read(0, 100)
    assert [r.id for r in everything] == ids1 + ids2
    assert [r.event for r in everything] == first + second  # round-trips field for field

    page = event_log.read(ids1[1], 2)  # paging: strictly after, at most `limit`
    assert [r.id for r in page] == [ids1[2], ids2[0]]
    assert event_log.read(ids2[-1], 10) == []

    assert event_log.stream(a) == [first[0], second[0]]
    raw = event_log.read_raw(0, 100)
    assert [row[0] for row in raw] == ids1 + ids2
    assert raw[0][1] == "IncidentOpened"  # the stored name from the registry, not a Python path


def test_tracking_position_commits_with_events(event_log: EventLog) -> None:
    assert event_log.position("kafka:t:0") is None
    ids = event_log.append([_dead("x")], Tracking("kafka:t:0", 41))
    assert len(ids) == 1
    assert event_log.position("kafka:t:0") == 41

    event_log.append([_dead("y"), _dead("z")], Tracking("kafka:t:0", 42))
    assert event_log.position("kafka:t:0") == 42
    # A batch that changed nothing still moves the position (repeats produce no events).
    assert event_log.append([], Tracking("kafka:t:0", 43)) == []
    assert event_log.position("kafka:t:0") == 43
    # Positions are per name.
    event_log.append([_dead("w")], Tracking("kafka:t:1", 7))
    assert event_log.position("kafka:t:1") == 7
    assert event_log.position("kafka:t:0") == 43
    assert event_log.max_id() == 4


def test_failed_transaction_stores_neither_events_nor_tracking(event_log: EventLog) -> None:
    stream = uuid4()
    event_log.append([_opened(stream)], Tracking("kafka:t:0", 10))
    before = event_log.max_id()

    innocent = _dead("would be lost with the batch")
    conflicting = _opened(stream)  # version 1 of a stream that already has version 1
    with pytest.raises(IntegrityError):
        event_log.append([innocent, conflicting], Tracking("kafka:t:0", 11))

    assert event_log.max_id() == before
    assert [r.event for r in event_log.read(0, 100)] == [_opened(stream)]
    assert event_log.position("kafka:t:0") == 10
    # The store is still usable after the failed transaction.
    event_log.append([innocent], Tracking("kafka:t:0", 11))
    assert event_log.position("kafka:t:0") == 11
    assert event_log.max_id() > before


def test_checkpoints_keep_the_last_two(event_log: EventLog) -> None:
    assert event_log.load_checkpoint() is None
    for position, state in [(10, b"ten"), (20, b"twenty"), (30, b"thirty"), (40, b"forty")]:
        event_log.save_checkpoint(position, state)
        assert event_log.load_checkpoint() == (position, state)
    kept = event_log.checkpoints.select_events(CHECKPOINT_ID)
    assert [c.originator_version for c in kept] == [30, 40]


# --- the Ingestor on each backend ------------------------------------------------------


async def _start(
    url: str, clock: Clock, checkpoint_every: int = 20_000
) -> tuple[Ingestor, EventLog]:
    log = await asyncio.to_thread(EventLog, url)
    ing = Ingestor(log, POLICY, clock, checkpoint_every=checkpoint_every)
    await ing.start()
    return ing, log


async def _stop(ing: Ingestor, log: EventLog) -> None:
    await ing.close()
    await asyncio.to_thread(log.close)


async def _receive(ing: Ingestor, clock: Clock, body: bytes) -> list[DomainEvent]:
    alerts = parse_postable_alerts(body, now=clock(), resolve_timeout=POLICY.resolve_timeout)
    return await ing.submit([ReceiveAlert(a) for a in alerts])


async def test_ingestor_daemon_flow(store_url: str) -> None:
    clock = Clock()
    ing, log = await _start(store_url, clock)
    try:
        evs = await _receive(
            ing, clock, _postable(_alert("DiskFull", "web1"), _alert("DiskFull", "web2"))
        )
        assert [type(e).__name__ for e in evs] == ["IncidentOpened", "AlertFired", "AlertFired"]
        (inc,) = ing.world.incidents.values()
        assert inc.state == "open"
        assert inc.firing == 2
        # Repeats of unchanged firing alerts store nothing.
        clock.advance(seconds=10)
        position = ing.world.position
        assert await _receive(ing, clock, _postable(_alert("DiskFull", "web1"))) == []
        assert await asyncio.to_thread(log.max_id) == position

        # Many callers at once: one group commit, every caller answered after it.
        clock.advance(seconds=1)
        bodies = [_postable(_alert("CPUHigh", f"db{i}", cluster=f"c{i % 3}")) for i in range(30)]
        results = await asyncio.gather(*(_receive(ing, clock, b) for b in bodies))
        assert all(len(r) >= 1 for r in results)
        assert len([i for i in ing.world.incidents.values() if i.title == "CPUHigh"]) == 3
        assert await asyncio.to_thread(log.max_id) == ing.world.position

        # Resolution from the source (a webhook) resolves the incident with its last alert.
        clock.advance(seconds=5)
        resolved = [
            {
                **_alert("DiskFull", h),
                "status": "resolved",
                "startsAt": T0.isoformat(),
                "endsAt": clock().isoformat(),
            }
            for h in ("web1", "web2")
        ]
        webhook = json.dumps({"version": "4", "status": "resolved", "alerts": resolved}).encode()
        evs = await ing.submit([ReceiveAlert(a) for a in parse_webhook(webhook, now=clock())])
        assert [type(e).__name__ for e in evs] == [
            "AlertResolved",
            "AlertResolved",
            "IncidentResolved",
        ]
        assert ing.world.incidents[inc.id].state == "resolved"

        # After the reopen window a tick closes it; the log has the whole story.
        clock.advance(minutes=31)
        closed = await ing.tick()
        assert any(
            type(e).__name__ == "IncidentClosed" and e.originator_id == inc.id for e in closed
        )
        timeline = [type(e).__name__ for e in await asyncio.to_thread(log.stream, inc.id)]
        assert timeline[0] == "IncidentOpened"
        assert timeline[-1] == "IncidentClosed"
        assert timeline.count("AlertFired") == 2
    finally:
        await _stop(ing, log)


async def _busy_history(ing: Ingestor, clock: Clock) -> None:
    """Enough varied history to exercise every kind of state the world keeps."""
    for round_ in range(6):
        batch = [
            _alert(f"Alert{n}", f"host{h}", cluster=f"c{h % 2}") for n in range(4) for h in range(5)
        ]
        if round_ % 2:
            batch.append(
                {
                    **_alert("Flappy", "x"),
                    "endsAt": (clock() - timedelta(seconds=1)).isoformat(),
                    "startsAt": (clock() - timedelta(minutes=1)).isoformat(),
                }
            )
        else:
            batch.append(_alert("Flappy", "x"))
        await _receive(ing, clock, _postable(*batch))
        clock.advance(minutes=3)
    some = next(iter(ing.world.incidents.values()))
    await ing.execute(Acknowledge(some.id, "alice", "looking"))
    await ing.execute(
        CreateSilence(
            uuid4(),
            (Matcher.parse('alertname=~"Muted|Flappy"'),),
            clock(),
            clock() + timedelta(hours=1),
            "bob",
            "maintenance",
        )
    )
    # Flappy was in an incident and resolved; firing again under the silence moves it out.
    assert (
        ing.world.alerts[
            next(fp for fp, a in ing.world.alerts.items() if a.alert.name == "Flappy")
        ].incident_id
        is not None
    )
    await _receive(ing, clock, _postable(_alert("Muted", "m1"), _alert("Flappy", "x")))
    assert all(a.incident_id is None for a in ing.world.alerts.values() if a.alert.name == "Flappy")
    _assert_index_matches(ing.world)
    await ing.submit([RecordDeadLetter(uuid4(), "api_v2", "bad payload", "[{", 3)])
    clock.advance(minutes=6)  # leases without renewal run out
    await ing.tick()
    clock.advance(minutes=31)  # and resolved incidents close
    await ing.tick()
    await _receive(ing, clock, _postable(_alert("Alert1", "host1", cluster="c1")))


def _assert_index_matches(world: World) -> None:
    """The incident -> alerts index agrees with a scan of every alert, order included."""
    for inc_id in list(world.incidents) + list(world.closed):
        scan = [a for a in world.alerts.values() if a.incident_id == inc_id]
        assert world.incident_alerts(inc_id) == scan


async def _crash(ing: Ingestor, log: EventLog) -> None:
    """Stop an Ingestor the way kill -9 would: no final checkpoint, nothing flushed."""
    assert ing._task is not None
    ing._task.cancel()
    await asyncio.gather(ing._task, return_exceptions=True)
    ing._task = None
    if ing._snapshot is not None:
        # A checkpoint child dies with its parent (PR_SET_PDEATHSIG): cancelling kills it.
        ing._snapshot.cancel()
        await asyncio.gather(ing._snapshot, return_exceptions=True)
    ing.writer.shutdown(wait=True)
    await asyncio.to_thread(log.close)


async def test_ingestor_rebuilds_identical_state_from_checkpoint_and_log(store_url: str) -> None:
    clock = Clock()
    # Small checkpoint interval: checkpoints land mid-history and the log goes on after them.
    ing, log = await _start(store_url, clock, checkpoint_every=7)
    try:
        await _busy_history(ing, clock)
        expected = ing.world.model_dump(mode="json")
        expected_counts = dict(ing.projections.event_counts)
        expected_dead = list(ing.projections.dead_letters)
        _assert_index_matches(ing.world)
        assert expected["closed"]
        assert expected["silences"]
        assert expected["incidents"]
        total = await asyncio.to_thread(log.max_id)
        await ing.checkpoint_written()
        assert ing.checkpoints_in_child > 0, "checkpoints are serialized by a forked child"
        cp = await asyncio.to_thread(log.load_checkpoint)
        assert cp is not None
        assert 0 < cp[0] < total, "want a checkpoint plus a tail of the log"
    finally:
        await _crash(ing, log)

    # A new process rebuilds from the newest checkpoint + the log after it.
    again, log2 = await _start(store_url, Clock(clock()))
    try:
        assert again.world.model_dump(mode="json") == expected
        assert dict(again.projections.event_counts) == expected_counts
        assert list(again.projections.dead_letters) == expected_dead
        _assert_index_matches(again.world)
        # From the log alone: no checkpoint at all.
        await asyncio.to_thread(log2._delete_checkpoints_upto, 2**62)
        assert await asyncio.to_thread(log2.load_checkpoint) is None
    finally:
        await _crash(again, log2)
    bare, log3 = await _start(store_url, Clock(clock()))
    try:
        assert bare.world.model_dump(mode="json") == expected
        assert dict(bare.projections.event_counts) == expected_counts
        assert list(bare.projections.dead_letters) == expected_dead
        _assert_index_matches(bare.world)
    finally:
        await _stop(bare, log3)
    # A clean stop leaves a checkpoint at the end of the log.
    log4 = await asyncio.to_thread(EventLog, store_url)
    try:
        assert (await asyncio.to_thread(log4.load_checkpoint) or (0,))[0] == total
    finally:
        await asyncio.to_thread(log4.close)


# --- the daemon as a process on each backend -------------------------------------------


def _firing_labels(wk: Watchkeeper) -> set[tuple[tuple[str, str], ...]]:
    out = set()
    for inc in wk.incidents():
        for a in wk.incident_alerts(inc["id"]):
            if a["status"] == "firing":
                out.add(tuple(sorted(a["labels"].items())))
    return out


def test_daemon_rebuilds_state_after_kill(store_url: str, tmp_path: Path) -> None:
    wk = Watchkeeper(
        tmp_path / "wk",
        store_url,
        {"grouping": {"group_by": ["alertname", "cluster"], "resolve_timeout": "1h"}},
    )
    wk.start()
    try:
        sent = [_alert(f"Store{n}", f"h{h}") for n in range(3) for h in range(4)]
        r = httpx.post(f"{wk.url}/api/v2/alerts", content=_postable(*sent), timeout=30)
        assert r.status_code == 200, r.text
        incidents = {i["id"]: i for i in wk.incidents()}
        assert len(incidents) == 3
        first = next(iter(incidents))
        r = httpx.post(
            f"{wk.url}/api/v1/incidents/{first}/ack", json={"comment": "mine"}, timeout=30
        )
        assert r.status_code == 200, r.text
        position = wk.get("/api/v1/status")["position"]

        wk.kill()
        wk.start()
        # Everything committed before the kill is there (reactions may have added more).
        assert wk.get("/api/v1/status")["position"] >= position
        after = {i["id"]: i for i in wk.incidents()}
        assert after.keys() == incidents.keys()
        assert after[first]["state"] == "acknowledged"
        expected = {tuple(sorted(a["labels"].items())) for a in sent}
        assert _firing_labels(wk) == expected
        # The rebuilt daemon keeps deciding from the same state: repeats change nothing.
        position = wk.get("/api/v1/status")["position"]
        r = httpx.post(f"{wk.url}/api/v2/alerts", content=_postable(*sent), timeout=30)
        assert r.status_code == 200
        assert intake_events_after(wk, position) == []
        assert wk.stop() == 0
    finally:
        wk.stop()
