"""The Ingestor and Reactor through a store outage: refuse at once, never hang, recover.

A real SQLite event log whose writes are made to fail (or stall) on demand, as a store that
went away would; the e2e tests (tests/e2e/test_store_outage.py) stop a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, Tracking
from pydantic import ValidationError

from daemon.config.settings import Settings
from daemon.domain import Alert, GroupingPolicy, ReceiveAlert, fingerprint
from daemon.domain.backoff import Backoff
from daemon.domain.events import DomainEvent
from daemon.engine.ingest import Ingestor
from daemon.engine.outage import StoreHealth
from daemon.engine.reactor import Reactor
from daemon.engine.store import EventLog, StoreUnavailable

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyLog(EventLog):
    """An EventLog whose writes and probes fail while `down`, or stall while `stalled`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = False
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.reconnects = 0

    def append(self, events: Sequence[DomainEvent], tracking: Tracking | None = None) -> list[int]:
        if self.stalled.is_set():
            self.released.wait(10)
        if self.down:
            raise OperationalError("server closed the connection unexpectedly")
        return super().append(events, tracking)

    def reconnect(self) -> None:
        self.reconnects += 1
        if self.down:
            raise OperationalError("connection refused")
        super().reconnect()


def _alert(name: str) -> ReceiveAlert:
    labels = {"alertname": name}
    return ReceiveAlert(
        Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=T0, source="test")
    )


@pytest.fixture
async def ing(tmp_path: Path) -> AsyncIterator[Ingestor]:
    log = FlakyLog(f"sqlite:///{tmp_path}/events.db")
    ingestor = Ingestor(
        log, GroupingPolicy(), lambda: T0, commit_timeout=0.3, recovery=Backoff(0.01, 0.05)
    )
    await ingestor.start()
    yield ingestor
    log.down = False
    log.released.set()
    await ingestor.close()
    log.close()


def _log(ing: Ingestor) -> FlakyLog:
    assert isinstance(ing.log, FlakyLog)
    return ing.log


async def test_a_failed_commit_refuses_at_once_and_recovery_reopens_intake(
    ing: Ingestor,
) -> None:
    await ing.submit([_alert("Before")])
    _log(ing).down = True
    with pytest.raises(StoreUnavailable, match="commit failed"):
        await ing.submit([_alert("During")])
    assert not ing.store.up
    assert "server closed the connection" in ing.store.problem()
    # Refused without waiting while down: nothing is decided, nothing queued.
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable for"):
        await ing.submit([_alert("Later")])
    assert time.monotonic() - began < 0.05
    await asyncio.sleep(0.2)
    assert _log(ing).reconnects >= 2  # probing with backoff
    assert not ing.store.up

    _log(ing).down = False
    await asyncio.wait_for(ing.store_available(), 2)
    assert ing.store.up
    # The world was rebuilt from the log: the refused alert is not in it.
    names = {a.alert.labels["alertname"] for a in ing.world.alerts.values()}
    assert names == {"Before"}
    await ing.submit([_alert("After")])
    assert {e.event.model_dump().get("alert", {}).get("labels", {}).get("alertname")
            for e in ing.log.read()} >= {"Before", "After"}
    assert ing.store.view()["outages"] == 1


async def test_a_commit_that_hangs_is_answered_within_the_commit_timeout(ing: Ingestor) -> None:
    _log(ing).stalled.set()
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"not committed within 0\.3s"):
        await ing.submit([_alert("Stuck")])
    assert time.monotonic() - began < 1.0
    # Queued behind the stalled commit: answered within the same bound, and dropped.
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await ing.submit([_alert("Queued")])
    assert time.monotonic() - began < 1.0
    _log(ing).stalled.clear()
    _log(ing).released.set()
    await asyncio.sleep(0.1)
    assert await ing.submit([_alert("Next")])
    names = {a.alert.labels["alertname"] for a in ing.world.alerts.values()}
    assert "Queued" not in names  # its caller heard 503: never decided afterwards


async def test_an_idle_store_that_went_away_is_noticed_by_the_probe(ing: Ingestor) -> None:
    def broken() -> None:
        raise OperationalError("connection refused")

    ing.log.probe = broken  # type: ignore[method-assign]
    assert await ing.check_store() is False
    assert not ing.store.up
    del ing.log.probe  # the class's own again
    await asyncio.wait_for(ing.store_available(), 2)


class Recording:
    """A reaction that records one event per alert it sees, with its position."""

    name = "recording"

    def __init__(self, ing: Ingestor) -> None:
        self.ing = ing
        self.attempts: list[int] = []

    def interested(self, event: DomainEvent) -> bool:
        return type(event).__name__ == "AlertFired"

    async def react(self, position: int, event: DomainEvent) -> None:
        self.attempts.append(position)
        await self.ing.submit([], tracking=Tracking(f"reactor:{self.name}", position))


async def test_a_reaction_refused_by_the_store_runs_again_once_it_is_back(
    ing: Ingestor,
) -> None:
    reaction = Recording(ing)
    reactor = Reactor(ing, [reaction])
    await reactor.start()
    try:
        log = _log(ing)
        real_append = EventLog.append
        calls: dict[str, Any] = {"n": 0}

        def fail_tracking_once(
            self: EventLog, events: Sequence[DomainEvent], tracking: Tracking | None = None
        ) -> list[int]:
            if tracking is not None and calls["n"] == 0:
                calls["n"] += 1
                log.down = True  # the store goes away just as the reaction records
            return FlakyLog.append(log, events, tracking)

        log.append = fail_tracking_once.__get__(log)  # type: ignore[method-assign]
        await ing.submit([_alert("A")])
        await asyncio.sleep(0.2)
        assert not ing.store.up
        first = reaction.attempts[0]
        log.append = real_append.__get__(log)  # type: ignore[method-assign]
        log.down = False
        await asyncio.wait_for(ing.store_available(), 2)
        for _ in range(100):
            if await ing.position("reactor:recording") == first:
                break
            await asyncio.sleep(0.02)
        assert await ing.position("reactor:recording") == first
        assert reaction.attempts == [first, first]  # paused, then the same event again
    finally:
        await reactor.close()


def test_store_health_counts_an_outage_once_and_reports_its_length() -> None:
    now = [100.0]
    h = StoreHealth(clock=lambda: now[0])
    assert h.up
    assert h.failed("boom") is True
    now[0] += 4
    assert h.failed("still boom") is False
    assert h.problem() == "event store unavailable for 4s: still boom"
    assert h.view()["seconds_since_commit"] == 4.0
    assert h.recovered() == 4.0
    assert h.up
    assert h.outages == 1


@pytest.mark.parametrize(
    "knob",
    ["commit_timeout", "store_connect_timeout", "store_statement_timeout",
     "reconnect_backoff", "reconnect_max_backoff"],
)
def test_outage_knobs_must_be_positive(knob: str) -> None:
    with pytest.raises(ValidationError, match="must be longer than 0s"):
        Settings.model_validate({"tuning": {knob: "0s"}})
    assert Settings.model_validate({"tuning": {knob: "2s"}}).tuning.model_dump()[knob]
