"""This daemon's role among the replicas of one PostgreSQL store: leader or follower.

A follower tails the log into a warm world (reads are served from it): it reads new events
as soon as the leader's commit notifies it (LISTEN/NOTIFY, `daemon.engine.logtail`), and
every poll in any case. It tries for the lead every poll; the one that wins the advisory
lock catches up to the log head, then starts the leader's components (reactions, timers,
stream sources), which resume from their tracked positions as after a restart. A leader
heartbeats; when its lock is lost or a commit was fenced out it stops those components and
follows again. On shutdown the leader stops them and releases the lock at once, so a
follower takes over within a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from daemon.engine.fencing import Fence
from daemon.engine.ingest import Ingestor
from daemon.engine.leadership import Election, Leader
from daemon.engine.logtail import LogTail

log = logging.getLogger("watchkeeper.replica")
T = TypeVar("T")

# A follower believes a leader whose heartbeat is younger than this (seconds).
LEADER_FRESH = 10.0


class Replica:
    """Runs the election and switches the leader's components on and off."""

    def __init__(
        self,
        ingestor: Ingestor,
        election: Election | None,
        fence: Fence | None,
        *,
        start_leading: Callable[[], Awaitable[None]],
        stop_leading: Callable[[], Awaitable[None]],
        poll: float = 0.3,
        heartbeat: float = 1.0,
        tail: LogTail | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.election = election
        self.fence = fence
        self._start_leading = start_leading
        self._stop_leading = stop_leading
        self.poll = poll
        self.heartbeat = heartbeat
        # Without an election (SQLite) this process is the only writer, always.
        self.role = "leader" if election is None else "follower"
        self.epoch: int | None = None
        self.leader: Leader | None = None
        self.synced_at = time.monotonic()
        # Notifications of the leader's commits (None: read the log every poll only).
        self.tail = tail
        # When the last complete read of the log began, and when the notification that
        # started a read still under way came (monotonic).
        self._read_began = self.synced_at
        self._catching_since: float | None = None
        self.takeovers = 0
        self.last_takeover_seconds = 0.0
        self._deposed = asyncio.Event()
        self._last_problem = ""
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wk-election")
        ingestor.on_deposed = self._on_deposed

    @property
    def replicated(self) -> bool:
        """Whether this daemon is one of several replicas (a PostgreSQL store)."""
        return self.election is not None

    @property
    def leading(self) -> bool:
        """Whether this process leads now."""
        return self.role == "leader"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Lead at once if the lock is free (a lone daemon leads before it serves), then run."""
        if self.election is None:
            await self._start_leading()
            return
        if self.tail is not None:
            await self.tail.start()
        try:
            await self._campaign()
        except Exception as e:
            log.warning("first election attempt failed: %s; following meanwhile", e)
        self._task = asyncio.create_task(self._run(), name="replica")

    async def stop_work(self) -> None:
        """Shutdown, first step: stop campaigning and the leader's components (streams,
        reactions, timers); commits still go on, so requests in flight can finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.leading:
            await self._stop_leading()

    async def close(self) -> None:
        """Shutdown, last step: a replica that leads hands over (releases the lock) now."""
        await self.stop_work()
        if self.election is not None:
            if self.leading:
                await self._step_down("shutting down", release=True)
            else:
                await self._call(self.election.release)
        if self.tail is not None:
            await self.tail.close()
        self._thread.shutdown(wait=False)

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if self.leading:
                    await self._lead_once()
                else:
                    await self._campaign()
                    if not self.leading:
                        await self._tail_until(time.monotonic() + self.poll)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Once per distinct problem (a store outage would repeat it every second).
                problem = f"{type(e).__name__}: {e}"
                if problem != self._last_problem:
                    log.warning("replica loop: %s; retrying every second", problem)
                    self._last_problem = problem
                await asyncio.sleep(1.0)
            else:
                self._last_problem = ""

    async def _lead_once(self) -> None:
        assert self.election is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.heartbeat):
                await self._deposed.wait()
        if self._deposed.is_set():
            await self._step_down("a commit was fenced: another replica took over", release=True)
            return
        renewed = await self._call(self.election.renew)
        if renewed is False:
            await self._step_down("lost the leader lock", release=True)
        # None: the store is unreachable; the commits fail (and are fenced if another
        # replica takes over), so keep the role and ask again at the next heartbeat.

    async def _campaign(self) -> None:
        """One follower round: try for the lock; else learn the leader and catch up."""
        assert self.election is not None
        epoch = await self._call(self.election.try_lead)
        if epoch is not None:
            await self._take_over(epoch)
            return
        self.leader = await self._call(self.election.leader)
        await self._read_log()

    async def _tail_until(self, deadline: float) -> None:
        """Between polls: read the log whenever the leader's commit notifies us."""
        while (left := deadline - time.monotonic()) > 0:
            if self.tail is None:
                await asyncio.sleep(left)
                return
            if not await self.tail.wait(left):
                return
            await self._read_log(self.tail.take())

    async def _read_log(self, notified_at: float | None = None) -> None:
        began = time.monotonic()
        self._catching_since = notified_at
        try:
            await self.ingestor.catch_up()
        finally:
            self._catching_since = None
        self._read_began, self.synced_at = began, time.monotonic()

    async def _take_over(self, epoch: int) -> None:
        began = time.monotonic()
        assert self.fence is not None
        self.fence.epoch = epoch
        self._deposed.clear()
        try:
            applied = await self.ingestor.take_lead()
            self.role, self.epoch = "leader", epoch
            self.leader = await self._call(self.election.leader) if self.election else None
            await self._start_leading()
        except Exception:
            log.exception("taking the lead failed epoch=%d; releasing it", epoch)
            await self._step_down("take-over failed", release=True)
            return
        self.takeovers += 1
        self.last_takeover_seconds = time.monotonic() - began
        self.synced_at = time.monotonic()
        log.info(
            "leading epoch=%d caught_up=%d position=%d seconds=%.3f",
            epoch, applied, self.ingestor.world.position, self.last_takeover_seconds,
        )

    async def _step_down(self, reason: str, *, release: bool) -> None:
        log.warning("stepping down epoch=%s: %s; following", self.epoch, reason)
        self.role = "follower"
        try:
            await self._stop_leading()
        except Exception:
            log.exception("stopping the leader's components failed")
        # Commits already queued still carry our epoch: let them land (or be fenced).
        await self.ingestor.stop_leading()
        if self.fence is not None:
            self.fence.epoch = None
        self.epoch = None
        if release and self.election is not None:
            await self._call(self.election.release)
        self._deposed.clear()

    def _on_deposed(self, reason: str) -> None:
        log.warning("deposed: %s", reason)
        self._deposed.set()

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # --- what status, /readyz and /metrics tell ------------------------------------------

    def lag_seconds(self) -> float:
        """How far behind the leader's commits this follower may be (0 for the leader).

        Listening since before its last read, a follower has missed nothing it was not
        told of: it is behind by the age of the oldest notification not yet read. Without
        notifications, by the time since it last read the log to its head.
        """
        if self.leading:
            return 0.0
        now = time.monotonic()
        tail = self.tail
        if (
            tail is not None
            and tail.listening_since is not None
            and tail.listening_since <= self._read_began
        ):
            unread = [t for t in (tail.pending_since, self._catching_since) if t is not None]
            return now - min(unread) if unread else 0.0
        return now - self.synced_at

    def leader_url(self) -> str | None:
        """Where to forward intake: None while we lead, "" while no leader is known."""
        if self.leading:
            return None
        lead = self.leader
        if lead is None or lead.age > LEADER_FRESH or not lead.address:
            return ""
        if self.election is not None and lead.leader_id == self.election.replica_id:
            return ""  # our own row from before a step-down: a successor has not written yet
        return lead.address

    def status(self) -> dict[str, Any]:
        """Role, epoch, leader and lag, for /api/v1/status, /readyz and `watchkeeper status`."""
        lead = self.leader
        return {
            "role": self.role,
            "replicated": self.replicated,
            "epoch": self.epoch if self.leading else (lead.epoch if lead else None),
            "replica_id": self.election.replica_id if self.election else None,
            "leader": (
                {"id": lead.leader_id, "address": lead.address,
                 "heartbeat_age_seconds": round(lead.age, 1)}
                if lead else None
            ),
            "lag_seconds": round(self.lag_seconds(), 3),
            "takeovers": self.takeovers,
            "last_takeover_seconds": round(self.last_takeover_seconds, 3),
        }


class ReplicaCollector(Collector):
    """`watchkeeper_leader`, `watchkeeper_leader_epoch`, `watchkeeper_replica_lag_seconds`."""

    def __init__(self, replica: Callable[[], Replica | None]) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Any]:
        r = self.replica()
        if r is None:
            return
        st = r.status()
        yield GaugeMetricFamily(
            "watchkeeper_leader", "1 while this replica leads (commits), 0 while it follows",
            value=1.0 if r.leading else 0.0,
        )
        yield GaugeMetricFamily(
            "watchkeeper_leader_epoch", "The leader epoch this replica knows",
            value=float(st["epoch"] or 0),
        )
        yield GaugeMetricFamily(
            "watchkeeper_replica_lag_seconds",
            "Seconds this follower may be behind the leader's commits (0 when leading)",
            value=st["lag_seconds"],
        )
        info = InfoMetricFamily("watchkeeper_replica", "This replica's role and its leader")
        info.add_metric(
            [], {"role": r.role, "leader": (st["leader"] or {}).get("address", "")}
        )
        yield info
