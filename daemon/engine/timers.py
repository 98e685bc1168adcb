"""The timer service: fires due deadlines through the Ingestor, once each, across restarts.

At start every pending deadline is already in the world (rebuilt from the log), so the
first pass fires whatever came due while the daemon was down. Afterwards it sleeps until
the next deadline, waking early when a new one is set. Firing goes through `decide`, which
refuses a deadline that already fired, so two passes (or two daemons) cannot fire it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from daemon.domain import Rejected
from daemon.domain.events import DomainEvent
from daemon.domain.timer_model import DeadlineFired, DeadlineSet, FireDeadline
from daemon.engine.ingest import Ingestor
from daemon.engine.store import StoreUnavailable

log = logging.getLogger("watchkeeper.timers")


class TimerService:
    """One named task that fires deadlines when the clock says they are due."""

    def __init__(
        self, ingestor: Ingestor, clock: Callable[[], datetime], *, max_idle: float = 1.0
    ) -> None:
        self.ingestor = ingestor
        self.clock = clock
        # Re-read the clock at least this often (seconds): an injected clock may jump.
        self.max_idle = max_idle
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    async def start(self) -> None:
        """Fire what is overdue now, then keep watching."""
        self.ingestor.listeners.append(self._on_commit)
        await self.fire_due()
        self._task = asyncio.create_task(self._run(), name="timers")

    async def close(self) -> None:
        """Stop watching; pending deadlines stay in the log for the next start."""
        with contextlib.suppress(ValueError):
            self.ingestor.listeners.remove(self._on_commit)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def poke(self) -> None:
        """Look at the clock again now (a deadline was set, or the clock moved)."""
        self._wake.set()

    def _on_commit(self, position: int, event: DomainEvent) -> None:
        if isinstance(event, DeadlineSet):
            self._wake.set()

    async def fire_due(self) -> list[DeadlineFired]:
        """Fire every deadline due now in one commit; return what fired."""
        due = self.ingestor.world.deadlines.due(self.clock())
        if not due:
            return []
        try:
            events = await self.ingestor.submit([FireDeadline(d.id) for d in due])
        except Rejected as e:
            # Only reachable with a single deadline that something else fired first.
            log.info("deadline not fired: %s", e.reason)
            return []
        fired = [e for e in events if isinstance(e, DeadlineFired)]
        self.fired += len(fired)
        now = self.clock()
        for ev in fired:
            log.info(
                "deadline fired kind=%s id=%s due=%s late_by=%.1fs",
                ev.kind,
                ev.originator_id,
                ev.due_at.isoformat(),
                (now - ev.due_at).total_seconds(),
            )
        return fired

    async def _run(self) -> None:
        while True:
            # Cleared before looking, so a deadline set meanwhile wakes the next wait at once.
            self._wake.clear()
            try:
                await self.fire_due()
            except StoreUnavailable as e:
                # Nothing fired (nothing committed): fire once the store is back; `decide`
                # refuses a deadline that already fired, so it fires exactly once.
                log.warning("deadlines not fired: %s; firing once the store answers", e)
                await self.ingestor.store_available()
                continue
            nxt = self.ingestor.world.deadlines.next_due_at()
            wait = self.max_idle
            if nxt is not None:
                wait = min(wait, max((nxt - self.clock()).total_seconds(), 0.0))
            with contextlib.suppress(TimeoutError):
                # A floor on the wait, so a deadline that cannot be fired does not spin the loop.
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.05))
