"""Followers hear of new events at once: PostgreSQL LISTEN/NOTIFY on a channel per schema.

The leader's insert transaction notifies `log_channel(schema)` with the highest
notification id it wrote; PostgreSQL delivers the notification when (and only if) the
transaction commits. A follower listens on a connection of its own (`LogTail`) and reads
the log as soon as one arrives. Notifications are a wake-up, never the data: a follower
still reads the log to its head every poll, so a lost notification or a listen connection
that is down only costs it the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("watchkeeper.logtail")


def log_channel(schema: str) -> str:
    """The NOTIFY channel of the event log in `schema` (channels are per database)."""
    digest = hashlib.sha256((schema or "public").encode()).hexdigest()[:16]
    return f"watchkeeper_log_{digest}"


class LogTail:
    """A LISTEN connection that wakes the follower when the leader commits events.

    `wait(within)` returns True as soon as a notification arrived since the last `take()`
    (or the connection was made again: events may have gone unheard), else False after
    `within` seconds. While the connection is down it reconnects every `retry` seconds.
    """

    def __init__(self, connect: dict[str, Any], schema: str, *, retry: float = 1.0) -> None:
        self.connect = dict(connect)
        self.channel = log_channel(schema)
        self.retry = retry
        # When LISTEN took effect on the current connection (monotonic), None while down.
        self.listening_since: float | None = None
        # When the first notification not yet taken arrived (monotonic).
        self.pending_since: float | None = None
        self.notifications = 0
        self.backend_pid: int | None = None
        self._woke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_problem = ""

    async def start(self) -> None:
        """Start listening in the background (a connection failure only delays it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="log-tail")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.listening_since = None

    async def wait(self, within: float) -> bool:
        """Whether the log may have grown: a notification came within `within` seconds."""
        if within > 0 and not self._woke.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._woke.wait()
        return self._woke.is_set()

    def take(self) -> float | None:
        """Consume the wake-up before reading the log; when its first notification came."""
        since, self.pending_since = self.pending_since, None
        self._woke.clear()
        return since

    def _wake(self) -> None:
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        self._woke.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                problem = f"{type(e).__name__}: {e}".strip()
                if problem != self._last_problem:
                    log.warning(
                        "log notifications lost: %s; reading the log every poll meanwhile",
                        problem,
                    )
                    self._last_problem = problem
            finally:
                self.listening_since = None
                self.backend_pid = None
            await asyncio.sleep(self.retry)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(**self.connect, autocommit=True)
        async with conn:
            await conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(self.channel)))
            self.listening_since = time.monotonic()
            self.backend_pid = conn.info.backend_pid
            if self._last_problem:
                log.info("log notifications back on channel %s", self.channel)
                self._last_problem = ""
            self._wake()  # commits while nobody listened were not announced: read once
            async for _ in conn.notifies():
                self.notifications += 1
                self._wake()
        raise ConnectionError("the listen connection closed")
