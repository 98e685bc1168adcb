"""A broken PostgreSQL connection pool is replaced, and the Ingestor carries on by itself.

A private server (this test terminates connections on it). The pool is broken the way a
long outage leaves it: its connections are gone and it cannot make new ones (here: it
points at a port nothing listens on), while the server itself is fine again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import realstack

from daemon.domain import Alert, GroupingPolicy, ReceiveAlert, fingerprint
from daemon.domain.backoff import Backoff
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog, StoreUnavailable

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def pg() -> Iterator[realstack.PostgresServer]:
    try:
        with realstack.private_postgres() as server:
            yield server
    except realstack.Unavailable as e:
        pytest.skip(f"cannot start a private PostgreSQL: {e}")


def _alert(name: str) -> ReceiveAlert:
    labels = {"alertname": name}
    return ReceiveAlert(
        Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=T0, source="test")
    )


async def test_a_pool_that_cannot_reconnect_is_replaced(pg: realstack.PostgresServer) -> None:
    log = EventLog(pg.url())
    ing = Ingestor(
        log, GroupingPolicy(), lambda: T0, commit_timeout=3.0, recovery=Backoff(0.05, 0.2)
    )
    await ing.start()
    try:
        await ing.submit([_alert("Before")])
        broken = log.factory.datastore.pool  # type: ignore[attr-defined]
        broken.kwargs["port"] = realstack.free_port()
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        with pytest.raises(StoreUnavailable):
            await ing.submit([_alert("Lost")])
        await asyncio.wait_for(ing.store_available(), 10)
        assert log.factory.datastore.pool is not broken  # type: ignore[attr-defined]
        await ing.submit([_alert("After")])
        names = {a.alert.labels["alertname"] for a in ing.world.alerts.values()}
        assert names == {"Before", "After"}
        stored = {
            r.event.alert.labels["alertname"]  # type: ignore[attr-defined]
            for r in log.read()
            if type(r.event).__name__ == "AlertFired"
        }
        assert stored == {"Before", "After"}
    finally:
        await ing.close()
        log.close()
