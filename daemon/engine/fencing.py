"""Epoch fencing: every commit checks, in its own transaction, that its writer still leads.

Replicas on one PostgreSQL store elect a leader (`daemon.engine.leadership`); each election
increments the epoch in the leader row. The leader's commits read that row `FOR SHARE`
before inserting: a successor's epoch bump waits for a commit already under way, and any
commit that starts after the bump sees the new epoch and is refused. So a leader that lost
its lock (a partition, a long pause) can never commit after its successor started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from daemon.engine.logtail import log_channel
from daemon.engine.outage import StoreUnavailable

LEADER_TABLE = "watchkeeper_leader"


class NotLeader(StoreUnavailable):
    """This replica does not lead: it may not commit (intake goes to the leader)."""


class Deposed(NotLeader):
    """A commit was refused because another replica took over with a newer epoch."""


class Fence:
    """The epoch this process leads with (None: it does not lead), checked inside commits."""

    def __init__(self, schema: str) -> None:
        self.epoch: int | None = None
        self.select = SQL("SELECT epoch FROM {0}.{1} WHERE id = 1 FOR SHARE").format(
            Identifier(schema), Identifier(LEADER_TABLE)
        )

    def check(self, curs: Cursor[DictRow]) -> None:
        """Raise unless the leader row still holds our epoch (locks the row until commit)."""
        mine = self.epoch
        if mine is None:
            raise NotLeader("this replica is not the leader")
        curs.execute(self.select, prepare=True)
        row = curs.fetchone()
        current = row["epoch"] if row else None
        if current != mine:
            raise Deposed(
                f"fenced: epoch {mine} was superseded by epoch {current}; another replica leads"
            )


class FencedProcessRecorder(PostgresProcessRecorder):
    """eventsourcing's PostgreSQL process recorder, checking the fence before it inserts.

    `_insert_events` runs inside the insert transaction, before the events and the tracking
    row are written; raising there rolls the whole transaction back. After the insert, the
    same transaction notifies the schema's log channel (`daemon.engine.logtail`), which
    PostgreSQL delivers to the listening followers at commit.
    """

    fence: Fence | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._notify = SQL("SELECT pg_notify({0}, %s)").format(
            Literal(log_channel(self.datastore.schema))
        )

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        """Not eventsourcing's channel (the table's name, shared by every schema): ours."""

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if ids:
            curs.execute(self._notify, (str(max(ids)),), prepare=True)
        return ids

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if self.fence is not None:
            self.fence.check(curs)
        super()._insert_events(curs, stored_events, **kwargs)


RECORDER_TOPIC = f"{__name__}:{FencedProcessRecorder.__qualname__}"
