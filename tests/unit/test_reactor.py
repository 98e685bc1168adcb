"""The Reactor's shutdown: an event in hand is let finish, within a grace period."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from domainkit import T0, mk
from eventsourcing.persistence import Tracking

from daemon.domain import GroupingPolicy
from daemon.domain.commands import ReceiveAlert
from daemon.domain.events import DomainEvent, IncidentOpened
from daemon.engine.ingest import Ingestor
from daemon.engine.reactor import Reactor
from daemon.engine.store import EventLog


class Gated:
    """A reaction that, like the notifier, does its effect and then records it."""

    name = "gated"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = False

    def interested(self, event: DomainEvent) -> bool:
        return isinstance(event, IncidentOpened)

    async def react(self, position: int, event: DomainEvent) -> None:
        self.started.set()
        try:
            await self.gate.wait()  # the message is on its way
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        await self.ingestor.submit([], tracking=Tracking(f"reactor:{self.name}", position))


@pytest.fixture
async def ingestor(tmp_path: Path) -> AsyncIterator[Ingestor]:
    log = await asyncio.to_thread(EventLog, f"sqlite:///{tmp_path}/events.db")
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    await ing.start()
    try:
        yield ing
    finally:
        await ing.close()
        await asyncio.to_thread(log.close)


async def _reacting(ing: Ingestor) -> tuple[Reactor, Gated]:
    gated = Gated(ing)
    reactor = Reactor(ing, [gated])
    await reactor.start()
    await ing.submit([ReceiveAlert(mk("Disk"))])
    await asyncio.wait_for(gated.started.wait(), 10)
    return reactor, gated


async def test_close_lets_the_event_in_hand_finish_and_record(ingestor: Ingestor) -> None:
    reactor, gated = await _reacting(ingestor)
    closing = asyncio.create_task(reactor.close())
    await asyncio.sleep(0.2)
    assert not closing.done(), "close waits for the event in hand"
    gated.gate.set()
    await asyncio.wait_for(closing, 10)
    assert not gated.cancelled
    assert await ingestor.position("reactor:gated") == 1  # IncidentOpened, recorded


async def test_close_cancels_what_outlasts_the_grace(ingestor: Ingestor) -> None:
    reactor, gated = await _reacting(ingestor)
    reactor.close_grace = 0.2
    await asyncio.wait_for(reactor.close(), 10)
    assert gated.cancelled
    assert not await ingestor.position("reactor:gated")  # taken up again at next start
