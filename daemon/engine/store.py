"""The event log: eventsourcing's process recorder (SQLite or PostgreSQL), used synchronously.

Only the writer thread calls the write methods (see `daemon.ingest.Ingestor`). Reads may
come from other threads: the library's connection pools make that safe.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    InfrastructureFactory,
    Mapper,
    ProcessRecorder,
    StoredEvent,
    Tracking,
)
from psycopg import sql
from pydantic import BaseModel

from daemon.domain import registry
from daemon.domain.events import DomainEvent
from daemon.engine.fencing import LEADER_TABLE, RECORDER_TOPIC, Fence, FencedProcessRecorder
from daemon.engine.outage import StoreUnavailable

__all__ = ["EventLog", "Recorded", "StoreTimeouts", "StoreUnavailable", "environment_for"]

log = logging.getLogger("watchkeeper.store")
T = TypeVar("T")

# The stream holding world checkpoints (state folded up to a notification id).
CHECKPOINT_ID = UUID("00000000-0000-4000-8000-00000000c0de")
CHECKPOINT_TOPIC = registry.CHECKPOINT_FORMAT
# Free bytes the SQLite store's file system needs before a probe calls the store usable.
SQLITE_MIN_FREE = 1024 * 1024
# zlib level for checkpoints: the fastest; a world's JSON still shrinks several times.
CHECKPOINT_LEVEL = 1


class PydanticMapper(Mapper[UUID]):
    """Stores events as their pydantic JSON under their registered name and version.

    The topic is the event's stable name from `daemon.domain.registry`, never its Python
    path; older schema versions and pre-registry topics are upcast on read.
    """

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        event: BaseModel = domain_event
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=registry.topic_of(domain_event),
            state=event.model_dump_json().encode(),
        )

    def to_domain_event(self, stored: StoredEvent) -> Any:
        return registry.decode(stored.topic, stored.state)


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event with its position in the global, ordered log."""

    id: int
    event: DomainEvent


@dataclass(frozen=True, slots=True)
class StoreTimeouts:
    """Bounds on every store call, so the writer thread never waits forever.

    `connect`: a new connection, and a wait for a free one in the pool (PostgreSQL) or for
    the database lock (SQLite); `statement`: one statement on the server (PostgreSQL).
    """

    connect: float = 5.0
    statement: float = 30.0


def environment_for(
    url: str, *, schema: str | None = None, timeouts: StoreTimeouts | None = None
) -> dict[str, str]:
    """Translate `store:` (a path, sqlite:///path, or postgresql://...) into eventsourcing env."""
    t = timeouts or StoreTimeouts()
    if url.startswith(("postgresql://", "postgres://")):
        u = urlparse(url)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": (u.path or "/").lstrip("/") or "postgres",
            "POSTGRES_HOST": u.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(u.port or 5432),
            "POSTGRES_USER": unquote(u.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(u.password or ""),
            # The wait for a connection from the pool (psycopg_pool's `timeout`).
            "POSTGRES_CONNECT_TIMEOUT": str(max(1, round(t.connect))),
            "POSTGRES_POOL_SIZE": "4",
            # A lock held by another writer, or a session stuck inside a transaction (its
            # client gone), must not hold our commits for longer than a statement may take.
            "POSTGRES_LOCK_TIMEOUT": str(max(1, round(t.statement))),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(max(1, round(t.statement))),
            # Tables are created by `EventLog` under an advisory lock (concurrent starts on a
            # fresh store raced in CREATE TYPE/TABLE), and commits are fenced by epoch.
            "CREATE_TABLE": "false",
            "PROCESS_RECORDER_TOPIC": RECORDER_TOPIC,
        }
        params = dict(p.split("=", 1) for p in u.query.split("&") if "=" in p)
        if schema or params.get("schema"):
            env["POSTGRES_SCHEMA"] = schema or params["schema"]
        return env
    path = _sqlite_path(url)
    if path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only whatever the umask (outside systemd it is often 022); SQLite
        # gives its -wal and -shm files the database file's permissions.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": str(max(1, round(t.connect))),
    }


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///").removeprefix("sqlite://")


def _libpq_bounds(t: StoreTimeouts) -> dict[str, Any]:
    """Connection parameters that bound what eventsourcing's env cannot (libpq, server side).

    Without `connect_timeout` psycopg waits up to 130 s for a host that does not answer;
    keepalives and `tcp_user_timeout` notice a peer that vanished without a reset (a
    failover, a dropped route) instead of waiting on the socket for the kernel's minutes.
    """
    ms = int(t.statement * 1000)
    return {
        "connect_timeout": max(1, round(t.connect)),
        "options": f"-c statement_timeout={ms}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": ms,
    }


# Advisory lock keys (the first of PostgreSQL's two int4 keys; the second is the schema's
# hash, so stores in different schemas of one database do not contend).
CREATE_LOCK_KEY = 0x574B0001
LEADER_LOCK_KEY = 0x574B0002


class EventLog:
    """Append events atomically (with an optional source position), read them back in order."""

    def __init__(self, url: str, timeouts: StoreTimeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts or StoreTimeouts()
        self.is_postgres = url.startswith(("postgresql://", "postgres://"))
        self._connect_kwargs: dict[str, Any] = {}
        # Set by `fence_commits` (replicas on PostgreSQL): every commit checks the epoch.
        self.fence: Fence | None = None
        self._open()
        # Bytes of event state appended by this process (writer thread), for checkpointing.
        self.bytes_appended = 0

    def _open(self) -> None:
        factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            environment_for(self.url, timeouts=self.timeouts)
        )
        if self.is_postgres:
            # The pool opens lazily: bound its connections before the first one is made.
            kwargs = factory.datastore.pool.kwargs  # type: ignore[attr-defined]
            kwargs.update(_libpq_bounds(self.timeouts))
            # What a recovery probe connects with: from the configuration, never from a pool.
            self._connect_kwargs = dict(kwargs)
        try:
            recorder: ProcessRecorder = factory.process_recorder()
            checkpoints: AggregateRecorder = factory.aggregate_recorder("snapshots")
            if self.is_postgres:
                _create_postgres_tables(factory, self._connect_kwargs, recorder, checkpoints)
        except BaseException:
            _close_quietly(factory)
            raise
        self.factory, self.recorder, self.checkpoints = factory, recorder, checkpoints
        self.mapper = PydanticMapper(transcoder=factory.transcoder())
        if isinstance(recorder, FencedProcessRecorder):
            recorder.fence = self.fence

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables ("" for SQLite)."""
        ds = self.factory.datastore  # type: ignore[attr-defined]
        return str(getattr(ds, "schema", "") or "")

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """libpq parameters of the store (PostgreSQL), for connections outside the pool."""
        return dict(self._connect_kwargs)

    def fence_commits(self) -> Fence:
        """From now on every commit checks the leader epoch (PostgreSQL replicas)."""
        if not self.is_postgres:
            raise ValueError("epoch fencing needs a PostgreSQL store")
        if self.fence is None:
            self.fence = Fence(self.schema)
            if isinstance(self.recorder, FencedProcessRecorder):
                self.recorder.fence = self.fence
        return self.fence

    def close(self) -> None:
        """Close the connection pool."""
        self.factory.close()

    def reconnect(self) -> None:
        """Replace the connection pool with a fresh one (PostgreSQL), then check the store.

        psycopg_pool retries lost connections with a backoff that grows to minutes, so a
        pool that lived through a long outage may not reconnect for minutes after the
        server is back; a new pool connects at once. Raises if the store does not answer.
        The old pool is closed in the background: closing waits for its workers.
        """
        if self.is_postgres:
            # One direct connection first: refused at once while the server is down, where a
            # new pool would wait its whole timeout for connections that never come.
            with psycopg.connect(**self._connect_kwargs) as conn:
                conn.execute("SELECT 1")
            old = self.factory
            self._open()
            threading.Thread(
                target=_close_quietly, args=(old,), name="wk-old-pool", daemon=True
            ).start()
        self.probe()

    def probe(self) -> None:
        """Raise unless the store answers a write now (a no-op row, not an event)."""
        ds = self.factory.datastore  # type: ignore[attr-defined]
        if self.is_postgres:
            with ds.transaction(commit=False) as c:
                c.execute("SELECT 1")
            return
        # SQLite answers reads on a full disk or a read-only file system: only a write tells.
        with ds.transaction(commit=True) as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS watchkeeper_probe "
                "(id INTEGER PRIMARY KEY, at REAL NOT NULL)"
            )
            c.execute("INSERT OR REPLACE INTO watchkeeper_probe VALUES (1, ?)", (time.time(),))
        # A one-row write fits in space a batch of events does not (the WAL reuses its
        # pages): call a full disk full until there is room for batches again.
        path = Path(_sqlite_path(self.url))
        if str(path) != ":memory:" and "mode=memory" not in str(path):
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
            if free < SQLITE_MIN_FREE:
                raise OSError(
                    f"database or disk is full: {free} bytes free on {path.parent}, "
                    f"waiting for {SQLITE_MIN_FREE}"
                )

    # --- writes (writer thread only) -----------------------------------------------------

    def append(
        self, events: Sequence[DomainEvent], tracking: Tracking | None = None
    ) -> list[int]:
        """Commit events (and the tracking position, if any) in one transaction."""
        stored = [self.mapper.to_stored_event(e) for e in events]
        if not stored and tracking is not None and self.fence is None:
            _once(self.recorder.insert_tracking)(tracking)
            return []
        ids = _once(self.recorder.insert_events)(stored, tracking=tracking)
        self.bytes_appended += sum(len(s.state) for s in stored)
        return list(ids or [])

    def save_checkpoint(self, position: int, state: bytes) -> None:
        """Store a compressed checkpoint of state folded up to `position`; keep the last two."""
        self.save_compressed_checkpoint(position, zlib.compress(state, CHECKPOINT_LEVEL))

    def save_compressed_checkpoint(self, position: int, blob: bytes) -> None:
        """Store a checkpoint already compressed with zlib (see `daemon.snapshot`)."""
        row = StoredEvent(CHECKPOINT_ID, position, CHECKPOINT_TOPIC, blob)
        if self.fence is not None:
            # Only the leader checkpoints: a deposed one's state may lack its successor's events.
            ds = self.factory.datastore  # type: ignore[attr-defined]
            with ds.transaction(commit=True) as c:
                self.fence.check(c)
                self.checkpoints._insert_stored_events(c, [row])  # type: ignore[attr-defined]
        else:
            _once(self.checkpoints.insert_events)([row])
        older = _once(self.checkpoints.select_events)(CHECKPOINT_ID, desc=True, limit=3)
        if len(older) > 2:
            self._delete_checkpoints_upto(older[-1].originator_version)

    def _delete_checkpoints_upto(self, version: int) -> None:
        table = getattr(self.checkpoints, "events_table_name", "stored_snapshots")
        ds = self.factory.datastore  # type: ignore[attr-defined]
        if self.is_postgres:
            # The recorder's tables live in the configured schema (?schema=), not search_path.
            table = f'"{ds.schema}"."{table}"'
        param = "%s" if self.is_postgres else "?"
        oid: Any = CHECKPOINT_ID if self.is_postgres else CHECKPOINT_ID.hex
        with ds.transaction(commit=True) as c:
            c.execute(
                f"DELETE FROM {table} WHERE originator_id = {param} "  # noqa: S608
                f"AND originator_version <= {param}",
                (oid, version),
            )

    # --- reads ---------------------------------------------------------------------------

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        """The newest checkpoint as (position, state), or None."""
        rows = _once(self.checkpoints.select_events)(CHECKPOINT_ID, desc=True, limit=1)
        if not rows:
            return None
        if rows[0].topic not in registry.CHECKPOINT_FORMATS:
            # Written in a format this version cannot read: the log alone rebuilds the state.
            log.warning(
                "ignoring checkpoint in unknown format %r; rebuilding from the log", rows[0].topic
            )
            return None
        return rows[0].originator_version, zlib.decompress(rows[0].state)

    def read(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        """Events with notification id > after, oldest first."""
        notes = _once(self.recorder.select_notifications)(
            start=after, limit=limit, inclusive_of_start=False
        )
        return [Recorded(n.id, self.mapper.to_domain_event(n)) for n in notes]

    def read_raw(
        self, after: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, bytes, UUID, int]]:
        """Undecoded notifications: (id, topic, json, originator, version) for export/paging."""
        notes = _once(self.recorder.select_notifications)(
            start=after, limit=limit, inclusive_of_start=False
        )
        return [
            (n.id, n.topic, n.state, UUID(str(n.originator_id)), n.originator_version)
            for n in notes
        ]

    def stream(self, originator_id: UUID) -> list[DomainEvent]:
        """All events of one stream (an incident's timeline), oldest first."""
        stored = _once(self.recorder.select_events)(originator_id)
        return [self.mapper.to_domain_event(s) for s in stored]

    def stream_window(
        self, originator_id: UUID, keep: int, bulky: frozenset[str], page: int = 256
    ) -> tuple[list[DomainEvent], int]:
        """One stream, oldest first, holding every event except those named in `bulky` (an
        incident's alert events, which a sender can make many of), of which only the newest
        `keep`. Read newest first a page at a time, and an event left out is never decoded,
        so memory is bounded by `page` and `keep`. Returns (events, how many were left out)."""
        kept: list[DomainEvent] = []
        bulky_kept = left_out = 0
        upto: int | None = None
        select = _once(self.recorder.select_events)
        while True:
            rows = select(originator_id, lte=upto, desc=True, limit=page)
            for s in rows:
                if registry.event_name(s.topic) in bulky:
                    if bulky_kept >= keep:
                        left_out += 1
                        continue
                    bulky_kept += 1
                kept.append(self.mapper.to_domain_event(s))
            if len(rows) < page or rows[-1].originator_version <= 0:
                break
            upto = rows[-1].originator_version - 1
        kept.reverse()
        return kept, left_out

    def stream_pages(self, originator_id: UUID, page: int = 256) -> Iterator[list[DomainEvent]]:
        """One stream, oldest first, `page` events at a time (to fold without holding it)."""
        after: int | None = None
        select = _once(self.recorder.select_events)
        while True:
            rows = select(originator_id, gt=after, limit=page)
            if rows:
                yield [self.mapper.to_domain_event(s) for s in rows]
            if len(rows) < page:
                return
            after = rows[-1].originator_version

    def max_id(self) -> int:
        """The newest notification id (0 for an empty log)."""
        return _once(self.recorder.max_notification_id)() or 0

    def position(self, name: str) -> int | None:
        """The recorded position of a source (e.g. kafka:topic:partition), or None."""
        return _once(self.recorder.max_tracking_id)(name)


def _once(method: Callable[..., T]) -> Callable[..., T]:
    """A recorder method without eventsourcing's own retry loop.

    Its PostgreSQL recorders retry a connection error ten times, each after waiting up to
    the pool timeout: one call on a store that is down took 50 s and held the writer. The
    Ingestor has its own recovery (probe with backoff), so each call here tries once.
    """
    inner = getattr(getattr(method, "__func__", None), "__wrapped__", None)
    if inner is None:
        return method
    return functools.partial(inner, method.__self__)  # type: ignore[attr-defined]


def _create_postgres_tables(
    factory: InfrastructureFactory[Any],
    connect: dict[str, Any],
    recorder: ProcessRecorder,
    checkpoints: AggregateRecorder,
) -> None:
    """Create (if missing) the log's tables and the leader row, one creator at a time.

    eventsourcing's CREATE TYPE / CREATE TABLE IF NOT EXISTS race when several daemons start
    at once on a fresh store (one fails on a duplicate key in the catalog); a transaction-
    scoped advisory lock held on a side connection serializes the creators.
    """
    ds: Any = factory.datastore  # type: ignore[attr-defined]
    schema = ds.schema or "public"
    with psycopg.connect(**connect, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CREATE_LOCK_KEY, schema))
        recorder.create_table()  # type: ignore[attr-defined]
        checkpoints.create_table()  # type: ignore[attr-defined]
        table = sql.SQL("{0}.{1}").format(sql.Identifier(schema), sql.Identifier(LEADER_TABLE))
        with ds.transaction(commit=True) as c:
            c.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (id integer PRIMARY KEY CHECK (id = 1), "
                    "epoch bigint NOT NULL DEFAULT 0, leader_id text NOT NULL DEFAULT '', "
                    "address text NOT NULL DEFAULT '', "
                    "heartbeat timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            c.execute(
                sql.SQL("INSERT INTO {0} (id) VALUES (1) ON CONFLICT DO NOTHING").format(table)
            )


def _close_quietly(factory: InfrastructureFactory[Any]) -> None:
    try:
        factory.close()
    except Exception as e:  # a pool that lost its server may fail to close cleanly
        log.debug("closing a replaced store connection pool: %s", e)
