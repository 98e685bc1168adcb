"""The Ingestor: the one path by which anything becomes an event.

Commands queue up; one task takes every queued command, decides them in order against the
world, commits all resulting events in one transaction on the writer thread, then answers
every caller. A caller's await returns only once its events are committed (group commit).
Submissions that carry a source position (Kafka offsets) are committed on their own so the
position lands in the same transaction as their events.

When a commit fails the store is marked down (`StoreHealth`): submissions are refused at
once with `StoreUnavailable` while a recovery task probes the store with backoff, replaces
the connection pool, rebuilds the world from the log and opens intake again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.persistence import IntegrityError, Tracking
from pydantic import BaseModel

from daemon.domain import Command, GroupingPolicy, Rejected, Tick, World, decide, evolve
from daemon.domain.backoff import Backoff
from daemon.domain.events import DomainEvent
from daemon.engine.fencing import NotLeader
from daemon.engine.outage import StoreHealth
from daemon.engine.projections import Projections
from daemon.engine.snapshot import Snapshot, available
from daemon.engine.store import EventLog, StoreUnavailable

log = logging.getLogger("watchkeeper.ingest")

# Seconds a checkpoint child may take; a world of a million alerts serializes in a few.
CHILD_TIMEOUT = 300.0

T = TypeVar("T")
Listener = Callable[[int, DomainEvent], None]


@dataclass
class _Submission:
    commands: Sequence[Command]
    future: asyncio.Future[list[DomainEvent]]
    tracking: Tracking | None = None
    events: list[DomainEvent] = field(default_factory=list)
    error: BaseException | None = None
    # The caller stopped waiting (commit_timeout): not decided if not yet begun.
    abandoned: bool = False


class Ingestor:
    """Owns the world, the event log's writer thread and the commit pipeline."""

    def __init__(
        self,
        log_: EventLog,
        policy: GroupingPolicy,
        clock: Callable[[], datetime],
        *,
        max_batch: int = 4096,
        checkpoint_every: int = 20_000,
        dead_letters_kept: int = 1000,
        checkpoint_in_child: bool = True,
        commit_timeout: float = 5.0,
        recovery: Backoff | None = None,
    ) -> None:
        self.log = log_
        self.policy = policy
        self.clock = clock
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        # Serialize checkpoints in a forked child (daemon/snapshot.py) rather than on the loop.
        self.checkpoint_in_child = checkpoint_in_child and available()
        self._snapshot: asyncio.Task[None] | None = None
        # The last child failed (say the OOM killer took it): write the next one in-process.
        self._child_failed = False
        self.checkpoints_in_child = 0
        # A child that has not delivered by then is killed and the next checkpoint written
        # in-process (say it hangs on a lock another thread held at the fork).
        self.child_timeout = CHILD_TIMEOUT
        self.world = World(policy=policy)
        self.projections = Projections(dead_letters_kept)
        self.listeners: list[Listener] = []
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wk-writer")
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue()
        self._checkpointed_at = 0
        # Size of the last checkpoint and the log bytes written when it was taken: a new one
        # waits until the log since is at least as large (see `_checkpoint_due`).
        self._checkpoint_bytes = 0
        self._log_bytes_at_checkpoint = 0
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        self.commits = 0
        self.last_commit_seconds = 0.0
        self.write_latency_observer: Callable[[float], None] | None = None
        # How long a caller waits for its commit before it is told `StoreUnavailable`.
        self.commit_timeout = commit_timeout
        self.store = StoreHealth()
        self.recovery = recovery or Backoff(0.5, 5.0)
        self._store_up = asyncio.Event()
        self._store_up.set()
        self._recovering: asyncio.Task[None] | None = None
        # The world holds events that were not committed: rebuild before deciding again.
        self._dirty = False
        # Whether this process may commit (replicas: only the leader; see runtime/replica.py).
        # A follower's world is kept warm by `catch_up` instead.
        self.leading = True
        # Called when a commit was fenced out (another replica took over).
        self.on_deposed: Callable[[str], None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the world from the newest checkpoint and the log after it, then accept work."""
        started = time.monotonic()
        replayed = await self._in_writer(self._rebuild)
        self.ready = True
        self._task = asyncio.create_task(self._run(), name="ingestor")
        log.info(
            "state rebuilt position=%d replayed=%d incidents=%d silences=%d seconds=%.3f",
            self.world.position,
            replayed,
            len(self.world.incidents),
            len(self.world.silences),
            time.monotonic() - started,
        )

    async def close(self) -> None:
        """Finish queued work, write a checkpoint, stop the writer thread."""
        if self._recovering is not None:
            self._recovering.cancel()
            await asyncio.gather(self._recovering, return_exceptions=True)
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            if self._snapshot is not None and not self._snapshot.done():
                # Stop the child: the checkpoint below covers all it would have written, and
                # shutdown does not wait on a child that may be slow or stuck.
                self._snapshot.cancel()
            await self.checkpoint_written()
            if (
                self.leading
                and self.ready
                and self.store.up
                and self.world.position > self._checkpointed_at
            ):
                # Nothing else runs now: serialize here rather than fork.
                try:
                    await self._checkpoint()
                except Exception as e:  # fenced out, or the store went: the log has it all
                    log.warning("checkpoint at shutdown not written: %s", _describe(e))
        self.writer.shutdown(wait=True)

    # --- submitting ----------------------------------------------------------------------

    async def submit(
        self, commands: Sequence[Command], tracking: Tracking | None = None
    ) -> list[DomainEvent]:
        """Decide and commit; return the committed events (empty when nothing changed).

        A single command that state refuses raises `Rejected`; in a batch of several,
        refused commands are skipped (sources do not get to argue).
        """
        if not self.leading:
            raise NotLeader("this replica is not the leader; send intake to the leader")
        if not self.store.up:
            # Fail fast: nothing is decided, so nothing needs undoing.
            raise StoreUnavailable(self.store.problem())
        fut: asyncio.Future[list[DomainEvent]] = asyncio.get_running_loop().create_future()
        sub = _Submission(commands, fut, tracking)
        await self._queue.put(sub)
        try:
            async with asyncio.timeout(self.commit_timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            sub.abandoned = True
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()  # committed just as the wait ran out
            raise StoreUnavailable(
                f"not committed within {self.commit_timeout:g}s (tuning.commit_timeout)"
                + (f"; {self.store.problem()}" if not self.store.up else "")
            ) from None

    async def store_available(self) -> None:
        """Return once the store commits again (at once if it does)."""
        await self._store_up.wait()

    async def check_store(self) -> bool:
        """Probe the store when it is idle; mark it down (and start recovery) if it fails.

        Called by the health loop: without traffic a commit cannot tell that the store is
        gone. A probe that does not answer within `commit_timeout` counts as failed.
        """
        if not self.store.up:
            return False
        try:
            async with asyncio.timeout(self.commit_timeout):
                await self._in_writer(self.log.probe)
        except Exception as e:
            self._store_down(f"probe failed: {_describe(e)}")
            return False
        return True

    async def execute(self, command: Command) -> list[DomainEvent]:
        """Submit one command from a person; raises `Rejected` with the reason."""
        return await self.submit([command])

    async def position(self, name: str) -> int | None:
        """A source's committed position (e.g. `kafka:alerts:0`)."""
        return await self._in_writer(self.log.position, name)

    async def checkpoint_written(self) -> None:
        """Return once no checkpoint is being written by a child (at once if none is)."""
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)

    async def writer_answers(self) -> None:
        """Return once the writer thread has run a no-op (the watchdog bounds the wait)."""
        await self._in_writer(lambda: None)

    async def catch_up(self) -> int:
        """Follow the log to its head: fold events other writers committed (a follower).

        Returns how many events were applied. Listeners and read models see them as they
        would see this process's own commits.
        """
        applied = 0
        while True:
            page = await self._in_writer(self.log.read, self.world.position, 1000)
            if not page:
                return applied
            for rec in page:
                if rec.id <= self.world.position:
                    continue
                evolve(rec.event, self.world)
                self.world.position = rec.id
                self._publish(rec.id, rec.event)
            applied += len(page)

    async def take_lead(self) -> int:
        """Become the writer: fold the log to its head, then accept submissions.

        Called once this process's epoch is in the leader row, so nothing else commits.
        Lease renewals are soft state the old leader held: sources get one resolve_timeout
        to renew before anything resolves by lease, as after a restart.
        """
        applied = await self.catch_up()
        self.world.lease_grace_until = self.clock() + self.policy.resolve_timeout
        self._checkpointed_at = min(self._checkpointed_at, self.world.position)
        self.leading = True
        return applied

    async def stop_leading(self) -> None:
        """Refuse new submissions, and return once those already queued are committed."""
        self.leading = False
        await self._queue.join()

    async def tick(self) -> list[DomainEvent]:
        """Let time pass: lease expiry, closing, silence expiry."""
        return await self.submit([Tick()])

    # --- the pipeline --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                for segment in _segments(items):
                    try:
                        await self._process(segment)
                    except Exception as e:
                        # The one writer must outlive any failure, or all intake hangs.
                        log.exception("commit pipeline failed; refusing the batch")
                        self._fail(segment, StoreUnavailable(f"not committed: {_describe(e)}"))
            finally:
                for _ in items:
                    self._queue.task_done()

    def _fail(self, batch: list[_Submission], err: BaseException) -> None:
        for sub in batch:
            if sub.future.done():
                continue
            sub.future.set_exception(err)
            if sub.abandoned:
                sub.future.exception()  # retrieved: its caller was already told

    def _admit(self, batch: list[_Submission]) -> list[_Submission]:
        """The submissions to decide now: not abandoned, and only while the store is up."""
        for sub in batch:
            if sub.abandoned and not sub.future.done():
                sub.future.cancel()  # the caller was already told it failed
        batch = [sub for sub in batch if not sub.future.done()]
        if batch and (not self.store.up or self._dirty):
            self._fail(batch, StoreUnavailable(self.store.problem() or "event store recovering"))
            return []
        return batch

    async def _process(self, batch: list[_Submission]) -> None:
        batch = self._admit(batch)
        if not batch:
            return
        now = self.clock()
        all_events: list[DomainEvent] = []
        for sub in batch:
            for cmd in sub.commands:
                try:
                    evs = decide(self.world, cmd, now)
                except Rejected as e:
                    if len(sub.commands) == 1:
                        sub.error = e
                    continue
                except Exception as e:  # a bug must not take intake down with it
                    log.exception("decide failed command=%s", type(cmd).__name__)
                    sub.error = e
                    continue
                sub.events.extend(evs)
            all_events.extend(sub.events)
        tracking = batch[0].tracking if len(batch) == 1 else None
        if tracking is not None and batch[0].error is not None:
            # Refused means nothing recorded, the position included: the caller decides
            # what to record instead (a dead letter, or the position alone).
            tracking = None
        if all_events or tracking is not None:
            try:
                t0 = time.perf_counter()
                ids = await self._in_writer(self.log.append, all_events, tracking)
                elapsed = time.perf_counter() - t0
            except IntegrityError as e:
                if all_events:
                    await self._commit_failed(batch, e, len(all_events))
                    return
                # A position at or behind the recorded one: already recorded, nothing to do.
                log.warning("position not advanced, already recorded: %s", e)
                ids, elapsed = [], 0.0
            except Exception as e:
                await self._commit_failed(batch, e, len(all_events))
                return
            self.commits += 1
            self.store.committed()
            self.recovery.reset()
            self.last_commit_seconds = elapsed
            if self.write_latency_observer is not None:
                self.write_latency_observer(elapsed)
            for pos, ev in zip(ids, all_events, strict=False):
                self._publish(pos, ev)
            if ids:
                self.world.position = ids[-1]
        for sub in batch:
            if sub.future.done():
                continue
            if sub.error is not None:
                sub.future.set_exception(sub.error)
            else:
                sub.future.set_result(sub.events)
        if self._checkpoint_due():
            await self._maybe_checkpoint()

    async def _maybe_checkpoint(self) -> None:
        try:
            await self._begin_checkpoint()
        except Exception as e:
            # Nothing lost: the log has every event; the next checkpoint comes later.
            self._checkpointed_at = self.world.position
            log.warning("checkpoint not written position=%d: %s", self.world.position, e)

    def _checkpoint_due(self) -> bool:
        """Every `checkpoint_every` events, once the log since is as large as a checkpoint.

        Serialising the world costs in proportion to its size; with a large hot set (100k
        firing alerts) a checkpoint every 20k events spent more time on checkpoints than on
        the events. Waiting until the events written since add up to the last checkpoint's
        size keeps the cost per event bounded (geometric while the world grows), and a
        restart still replays no more bytes of log than it loads of checkpoint. One
        checkpoint at a time: none is due while a child is still writing one.
        """
        if self._snapshot is not None and not self._snapshot.done():
            return False
        if self.world.position - self._checkpointed_at < self.checkpoint_every:
            return False
        written = self.log.bytes_appended - self._log_bytes_at_checkpoint
        return written >= self._checkpoint_bytes

    async def _commit_failed(self, batch: list[_Submission], e: Exception, events: int) -> None:
        """The world already holds uncommitted events: fail the batch, then rebuild.

        The callers hear at once; the rebuild waits for the store (`_recover`), so a store
        that is gone cannot hold the writer, and intake is refused until it is back.
        """
        self._dirty = True
        reason = _describe(e)
        if isinstance(e, NotLeader):
            # Fenced: another replica leads now. Nothing of ours was written; the world is
            # rebuilt from the log (the successor's events included) and we follow.
            self.leading = False
            self._fail(batch, NotLeader(f"not committed: {e}"))
            log.warning("commit fenced events=%d: %s; stepping down", events, e)
            if self.on_deposed is not None:
                self.on_deposed(str(e))
            try:
                await self._in_writer(self._rebuild)
                self._dirty = False
                return
            except Exception as again:
                reason = f"rebuild after a fenced commit failed: {_describe(again)}"
                self._store_down(reason)
                return
        self._fail(batch, StoreUnavailable(f"event store commit failed: {reason}"))
        if isinstance(e, IntegrityError):
            # The store answered (a conflict, not an outage): rebuild now, in one go.
            log.warning("commit refused events=%d: %s; rebuilding state from the log", events, e)
            try:
                await self._in_writer(self._rebuild)
                self._dirty = False
                return
            except Exception as again:
                reason = f"rebuild after a refused commit failed: {_describe(again)}"
        else:
            log.error("commit failed events=%d: %s", events, reason)
        self._store_down(reason)

    def _store_down(self, reason: str) -> None:
        """Refuse intake and start probing the store until it commits again."""
        if self.store.failed(reason):
            log.error(
                "event store unavailable: %s; refusing intake (503) until it answers", reason
            )
        self._store_up.clear()
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.create_task(self._recover(), name="store-recovery")

    async def _recover(self) -> None:
        """Probe with backoff until the store answers; then rebuild the world and reopen.

        Each probe replaces the connection pool (`EventLog.reconnect`), so how long the
        outage lasted does not matter: the first probe after the store is back succeeds.
        """
        attempts = 0
        while True:
            delay = self.recovery.next()
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._in_writer(self._reopen)
            except Exception as e:
                self.store.failed(_describe(e))
                log.warning(
                    "event store still unavailable attempt=%d down_for=%.0fs: %s",
                    attempts, self.store.down_for(), _describe(e),
                )
                continue
            self._dirty = False
            down = self.store.recovered()
            self.store.committed()
            self._store_up.set()
            log.info(
                "event store available again after %.1fs attempts=%d; state rebuilt "
                "position=%d; accepting intake",
                down, attempts, self.world.position,
            )
            return

    def _reopen(self) -> None:
        """Writer thread: a fresh connection, a write probe, then the world from the log."""
        self.log.reconnect()
        if self._dirty:
            self._rebuild()

    def _publish(self, position: int, event: DomainEvent) -> None:
        self.projections.apply(position, event)
        for listener in self.listeners:
            try:
                listener(position, event)
            except Exception:
                log.exception("listener failed event=%s", type(event).__name__)

    async def _begin_checkpoint(self) -> None:
        """Checkpoint the world as committed now, serialized by a forked child.

        Called between batches, when the world holds exactly what is committed. The fork is
        the snapshot; the child's bytes are stored by the writer thread when they arrive,
        while intake goes on. Without fork, or after a child failed, it is written here.
        """
        if not self.checkpoint_in_child or self._child_failed:
            self._child_failed = False
            await self._checkpoint()
            return
        position = self.world.position
        try:
            child = Snapshot.fork(self._state)
        except OSError as e:
            log.warning("cannot fork a checkpoint writer (%s); writing it in-process", e)
            await self._checkpoint()
            return
        previous = (self._checkpointed_at, self._log_bytes_at_checkpoint)
        self._checkpointed_at = position
        self._log_bytes_at_checkpoint = self.log.bytes_appended
        self._snapshot = asyncio.create_task(
            self._store_snapshot(child, position, previous), name="checkpoint"
        )

    async def _store_snapshot(
        self, child: Snapshot, position: int, previous: tuple[int, int]
    ) -> None:
        try:
            size, blob = await asyncio.wait_for(child.result(), self.child_timeout)
            await self._in_writer(self.log.save_compressed_checkpoint, position, blob)
        except BaseException as e:
            # Nothing stored: count from the last stored checkpoint again.
            self._checkpointed_at, self._log_bytes_at_checkpoint = previous
            if not isinstance(e, Exception):
                raise  # close() stopped the child (result() kills it); it checkpoints itself
            # The next comes soon, written in-process (a child that ran out of memory would
            # fail again).
            self._child_failed = True
            reason = (
                f"the child did not deliver within {self.child_timeout:g}s and was killed"
                if isinstance(e, TimeoutError)
                else str(e)
            )
            log.warning(
                "checkpoint not written position=%d: %s; the next is written in-process",
                position, reason,
            )
            return
        self._checkpoint_bytes = size
        self.checkpoints_in_child += 1
        log.info(
            "checkpoint written position=%d bytes=%d compressed=%d by=child",
            position, size, len(blob),
        )

    async def _checkpoint(self) -> None:
        """Write a checkpoint of the world as it is, serialized on the event loop."""
        position = self.world.position
        state = self._state()
        await self._in_writer(self.log.save_checkpoint, position, state)
        self._checkpointed_at = position
        self._checkpoint_bytes = len(state)
        self._log_bytes_at_checkpoint = self.log.bytes_appended
        log.info("checkpoint written position=%d bytes=%d", position, len(state))

    def _state(self) -> bytes:
        """The world and the read models as one JSON document (what a checkpoint stores)."""
        # pydantic's own JSON serializer: several times faster than model_dump + json.dumps
        # on a large world.
        return b"".join(
            (
                b'{"world":',
                self.world.model_dump_json(exclude={"policy"}).encode(),
                b',"projections":',
                json.dumps(self.projections.to_checkpoint()).encode(),
                b"}",
            )
        )

    # --- writer thread -------------------------------------------------------------------

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)

    def _rebuild(self) -> int:
        """Fold checkpoint + log into a fresh world (writer thread; nothing else runs)."""
        world = World(policy=self.policy)
        projections = Projections(self.projections.dead_letters.maxlen or 1000)
        cp = self.log.load_checkpoint()
        if cp is not None:
            position, blob = cp
            del cp
            # Straight from the bytes, without a dict of the whole world on the way: at the
            # largest state the limits allow that dict took the restart past MemoryMax.
            data = _Checkpoint.model_validate_json(blob)
            del blob
            world = data.world
            world.policy = self.policy  # the checkpoint holds none: it validated with the default
            for st in world.alerts.values() if self.policy.inhibit_rules else ():
                if st.firing:  # so its index of inhibit sources is filed under the running rules
                    world.note_inhibit_source(st.alert)
            world.position = position
            projections.restore(data.projections)
            del data
            self._checkpointed_at = position
        replayed = 0
        while True:
            page = self.log.read(world.position, 5000)
            if not page:
                break
            for rec in page:
                evolve(rec.event, world)
                projections.apply(rec.id, rec.event)
                world.position = rec.id
            replayed += len(page)
        # Lease renewals were soft state and are gone: give sources one resolve_timeout
        # to renew before anything resolves by lease (as a restarted Alertmanager would).
        world.lease_grace_until = self.clock() + self.policy.resolve_timeout
        self.world, self.projections = world, projections
        return replayed


class _Checkpoint(BaseModel):
    """A checkpoint's document as `_state` writes it."""

    world: World
    projections: dict[str, Any] = {}


def _describe(e: BaseException) -> str:
    """One line naming what went wrong (the store's own message, first line only)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _segments(items: list[_Submission]) -> list[list[_Submission]]:
    """Group consecutive position-free submissions; each positioned one stands alone."""
    out: list[list[_Submission]] = []
    for sub in items:
        if sub.tracking is None and out and out[-1][0].tracking is None:
            out[-1].append(sub)
        else:
            out.append([sub])
    return out
