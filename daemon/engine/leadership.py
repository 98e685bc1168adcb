"""One leader per store: a file lock for SQLite, an advisory lock and an epoch for PostgreSQL.

SQLite is single-daemon: `FileLock` holds an exclusive `flock` on a sidecar file for the
life of the process, so a second daemon on the same file refuses to start and names the
process that holds it.

PostgreSQL replicas elect a leader with a session-level advisory lock held on a dedicated
connection (`Election`). Winning the lock increments the epoch in the leader row, which
also names the leader and the HTTP address followers forward intake to; every commit is
fenced by that epoch (`daemon.engine.fencing`). The lock goes with its session: a leader
killed with -9 loses it as soon as the server sees the connection close, and one that
stops cleanly releases it at once. No consensus of our own: PostgreSQL decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from daemon.engine.fencing import LEADER_TABLE
from daemon.engine.store import LEADER_LOCK_KEY

log = logging.getLogger("watchkeeper.leadership")


class StoreInUse(RuntimeError):  # noqa: N818 - reads as a condition
    """Another daemon holds the store (SQLite's file lock)."""


class FileLock:
    """An exclusive lock on `<database>.lock`, held until `release()` or the process ends."""

    def __init__(self, database: str | Path) -> None:
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or raise `StoreInUse` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUse(
                f"the event store {str(self.path)[: -len('.lock')]} is in use by another "
                f"watchkeeper (pid {holder}, lock file {self.path}); stop it first, or give "
                "this daemon its own `state_dir`/`store` (replicas need a PostgreSQL store)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (idempotent); the file stays, empty of meaning."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class Leader:
    """The leader row as last read."""

    epoch: int
    leader_id: str
    address: str
    heartbeat: datetime | None
    # Seconds since the heartbeat, by the database's clock.
    age: float


class Election:
    """This replica's candidacy: try the lock, bump the epoch, heartbeat, release.

    Blocking calls: run them off the event loop, one at a time (a thread of their own, not
    the writer's, so a slow commit never delays a heartbeat).
    """

    def __init__(
        self, connect: dict[str, Any], schema: str, replica_id: str, address: str
    ) -> None:
        self.connect = dict(connect)
        self.schema = schema or "public"
        self.replica_id = replica_id
        self.address = address
        self.epoch: int | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._table = sql.SQL("{0}.{1}").format(
            sql.Identifier(self.schema), sql.Identifier(LEADER_TABLE)
        )

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            kwargs = {**self.connect, "autocommit": True, "row_factory": dict_row}
            self._conn = psycopg.connect(**kwargs)
        return self._conn

    def try_lead(self) -> int | None:
        """Take the lock if it is free and start a new epoch; the epoch, or None."""
        conn = self._connection()
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS got", (LEADER_LOCK_KEY, self.schema)
        ).fetchone()
        if not row or not row["got"]:
            return None
        # Waits for a commit of the previous leader still under way (it holds the row FOR
        # SHARE); every commit after this sees the new epoch.
        row = conn.execute(
            sql.SQL(
                "UPDATE {0} SET epoch = epoch + 1, leader_id = %s, address = %s, "
                "heartbeat = now() WHERE id = 1 RETURNING epoch"
            ).format(self._table),
            (self.replica_id, self.address),
        ).fetchone()
        if row is None:
            self.release()
            raise RuntimeError(f"no leader row in {self.schema}.{LEADER_TABLE}")
        self.epoch = int(row["epoch"])
        return self.epoch

    def renew(self) -> bool | None:
        """Heartbeat as leader: True (still leads), False (it does not: step down), or None.

        None: the store cannot be reached, so nobody can tell. The leader keeps its role
        (its commits fail meanwhile, and are fenced if a successor appears) and asks again.
        A lost connection is not a lost lead: if the lock is free again and the epoch is
        still ours, nobody led in between, and we carry on under the same epoch.
        """
        if self.epoch is None:
            return False
        try:
            return self._heartbeat()
        except psycopg.Error as e:
            log.warning("leader lock connection lost: %s; trying to keep the lead", e)
            self._drop()
        try:
            conn = self._connection()
        except psycopg.Error as e:
            log.warning("cannot reach the store to renew the lead: %s", e)
            return None
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS got",
                (LEADER_LOCK_KEY, self.schema),
            ).fetchone()
            if not row or not row["got"]:
                return False
            if self._heartbeat():
                return True
            self._unlock()  # the epoch moved on: give the lock straight back
            self._drop()
            return False
        except psycopg.Error as e:
            log.warning("cannot renew the lead: %s", e)
            self._drop()
            return None

    def _heartbeat(self) -> bool:
        cur = self._connection().execute(
            sql.SQL(
                "UPDATE {0} SET heartbeat = now() WHERE id = 1 AND epoch = %s AND leader_id = %s"
            ).format(self._table),
            (self.epoch, self.replica_id),
        )
        return cur.rowcount == 1

    def leader(self) -> Leader | None:
        """The leader row (who leads, where, and how fresh its heartbeat is)."""
        row = self._connection().execute(
            sql.SQL(
                "SELECT epoch, leader_id, address, heartbeat, "
                "EXTRACT(EPOCH FROM now() - heartbeat)::float8 AS age FROM {0} WHERE id = 1"
            ).format(self._table)
        ).fetchone()
        if row is None or not row["leader_id"]:
            return None
        return Leader(
            int(row["epoch"]), row["leader_id"], row["address"], row["heartbeat"],
            float(row["age"] or 0.0),
        )

    def release(self) -> None:
        """Give up the lead at once: unlock, then close the session.

        Closing alone is not "at once": the server releases a session's locks only when
        its backend has exited, a moment after the client hung up, and a successor asking
        in that moment is told the lock is still held. The explicit unlock returns only
        once the lock is free. (This connection holds no other advisory locks.)
        """
        self.epoch = None
        self._unlock()
        self._drop()

    def _unlock(self) -> None:
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock_all()")

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
