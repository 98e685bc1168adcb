"""The Reactor: follows the committed log and runs each reaction on every event, in order.

Each reaction has a name and a tracked position. A reaction that records events passes
`Tracking(name, position)` with them (via `Ingestor.submit(..., tracking=...)`), so its
progress commits atomically with its effects; at start it resumes after its tracked
position, reading the log, then follows live commits. Reactions must also be idempotent
against state (a replayed event after a crash finds its effect already in the world).

While the event store is unavailable every reaction pauses where it is: a reaction is not
started until the store commits again, and one whose record was refused (`StoreUnavailable`)
runs again on the same event once it does, as it would after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol, runtime_checkable

from daemon.domain.events import DomainEvent
from daemon.engine.ingest import Ingestor
from daemon.engine.store import StoreUnavailable

log = logging.getLogger("watchkeeper.reactor")

# Seconds close() lets an event already in hand finish (a message sent but not yet recorded
# would be sent again at the next start) before cancelling it.
CLOSE_GRACE = 10.0


class Reaction(Protocol):
    """Something that acts on committed events (start an investigation, send a message…)."""

    name: str

    def interested(self, event: DomainEvent) -> bool:
        """Cheap filter: whether `react` needs to see this event."""

    async def react(self, position: int, event: DomainEvent) -> None:
        """Handle one event; record effects with `Tracking(self.name, position)`."""


@runtime_checkable
class Service(Protocol):
    """A reaction that also runs tasks of its own (workers) while the reactor runs."""

    async def open(self) -> None:
        """Start background work (called before the reaction follows the log)."""

    async def shut(self) -> None:
        """Stop background work."""


@runtime_checkable
class Reporting(Protocol):
    """A reaction that reports status (API, CLI) and metrics (/metrics)."""

    def status(self) -> dict[str, Any]:
        """A JSON-able status."""

    def collectors(self) -> list[Any]:
        """prometheus_client collectors to register."""


class Reactor:
    """Runs each reaction in its own named task, fed from the log and from live commits."""

    def __init__(
        self, ingestor: Ingestor, reactions: list[Reaction], queue_size: int = 10_000
    ) -> None:
        self.ingestor = ingestor
        self.reactions = reactions
        self.queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[tuple[int, DomainEvent]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._overflow: dict[str, int] = {}
        # The react() each reaction is running now, shielded from its follower's cancel.
        self._in_hand: dict[str, asyncio.Future[None]] = {}
        self.close_grace = CLOSE_GRACE
        self.positions: dict[str, int] = {}

    async def start(self) -> None:
        """Subscribe to live commits, then start one task per reaction (catch-up first)."""
        for r in self.reactions:
            self._queues[r.name] = asyncio.Queue(self.queue_size)
        self.ingestor.listeners.append(self._on_commit)
        for r in self.reactions:
            if isinstance(r, Service):
                await r.open()
        for r in self.reactions:
            self._tasks.append(asyncio.create_task(self._follow(r), name=f"reactor:{r.name}"))

    async def close(self) -> None:
        """Stop following; unfinished events are picked up from the log at next start.

        An event a reaction is handling now is let finish (up to `close_grace` seconds):
        cancelled between its effect (a message sent) and its record, it would be done again
        at the next start.
        """
        with contextlib.suppress(ValueError):
            self.ingestor.listeners.remove(self._on_commit)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        in_hand = [j for j in self._in_hand.values() if not j.done()]
        if in_hand:
            _, late = await asyncio.wait(in_hand, timeout=self.close_grace)
            for j in late:
                log.warning(
                    "reaction still running after %gs at shutdown; cancelled", self.close_grace
                )
                j.cancel()
            for outcome in await asyncio.gather(*in_hand, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("reaction failed at shutdown: %r", outcome)
        self._in_hand.clear()
        for r in self.reactions:
            if isinstance(r, Service):
                await r.shut()

    def status(self) -> dict[str, Any]:
        """Status of every reporting reaction, by name."""
        return {r.name: r.status() for r in self.reactions if isinstance(r, Reporting)}

    def collectors(self) -> list[Any]:
        """Metric collectors of every reporting reaction."""
        return [c for r in self.reactions if isinstance(r, Reporting) for c in r.collectors()]

    def _on_commit(self, position: int, event: DomainEvent) -> None:
        for r in self.reactions:
            q = self._queues[r.name]
            if not r.interested(event):
                continue
            try:
                q.put_nowait((position, event))
            except asyncio.QueueFull:
                # Bounded memory: remember to re-read from the log instead.
                self._overflow.setdefault(r.name, position)

    async def _follow(self, r: Reaction) -> None:
        while True:
            try:
                start = await self.ingestor.position(f"reactor:{r.name}") or 0
                break
            except Exception as e:
                await self._store_gone(r, "reading its position", e)
        self.positions[r.name] = start
        live_from = self.ingestor.world.position
        await self._catch_up(r, start, live_from)
        q = self._queues[r.name]
        while True:
            if r.name in self._overflow:
                gap_from = self.positions[r.name]
                del self._overflow[r.name]
                while not q.empty():
                    q.get_nowait()
                await self._catch_up(r, gap_from, self.ingestor.world.position)
                continue
            position, event = await q.get()
            if position <= self.positions[r.name]:
                continue
            await self._run_one(r, position, event)

    async def _catch_up(self, r: Reaction, after: int, upto: int) -> None:
        pos = after
        while pos < upto:
            try:
                page = await asyncio.to_thread(self.ingestor.log.read, pos, 1000)
            except Exception as e:
                await self._store_gone(r, "catching up", e)
                continue
            if not page:
                break
            for rec in page:
                if rec.id > upto:
                    return
                if r.interested(rec.event):
                    await self._run_one(r, rec.id, rec.event)
                pos = rec.id
                self.positions[r.name] = max(self.positions[r.name], pos)

    async def _store_gone(self, r: Reaction, doing: str, e: Exception) -> None:
        log.warning(
            "reaction=%s paused %s: %s; resuming once the event store answers", r.name, doing, e
        )
        await self.ingestor.store_available()
        await asyncio.sleep(0.5)  # the store may answer a probe and fail a read again

    async def _run_one(self, r: Reaction, position: int, event: DomainEvent) -> None:
        while True:
            await self.ingestor.store_available()
            try:
                await self._react(r, position, event)
                return
            except StoreUnavailable as e:
                await self._store_gone(r, f"at position={position}", e)

    async def _react(self, r: Reaction, position: int, event: DomainEvent) -> None:
        job = self._in_hand[r.name] = asyncio.ensure_future(r.react(position, event))
        try:
            await asyncio.shield(job)  # close() waits for it rather than cutting it short
        except (asyncio.CancelledError, StoreUnavailable):
            raise
        except Exception:
            log.exception(
                "reaction failed reaction=%s position=%d event=%s",
                r.name,
                position,
                type(event).__name__,
            )
        self.positions[r.name] = max(self.positions[r.name], position)
