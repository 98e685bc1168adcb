"""One writer per store: SQLite's file lock, race-free table creation, election and fencing.

Against real PostgreSQL (a private server, else the machine's) and real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import Tracking
from realstack import PostgresServer

from daemon.domain import Alert, ReceiveAlert, fingerprint
from daemon.domain.state import GroupingPolicy
from daemon.engine.fencing import Deposed, NotLeader
from daemon.engine.ingest import Ingestor
from daemon.engine.leadership import Election, FileLock, StoreInUse
from daemon.engine.logtail import LogTail
from daemon.engine.store import EventLog
from daemon.runtime.replica import Replica

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store_url(postgres_server: PostgresServer) -> Iterator[str]:
    with postgres_server.schema() as name:
        yield postgres_server.url(name)


# --- SQLite: one daemon per file -------------------------------------------------------


def test_a_second_process_cannot_lock_the_file_and_is_told_who_holds_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            textwrap.dedent(f"""
                import sys, time
                from daemon.engine.leadership import FileLock
                FileLock({str(db)!r}).acquire()
                print("locked", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreInUse) as e:
            FileLock(db).acquire()
        assert f"pid {holder.pid}" in str(e.value)
        assert str(db) in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder (kill -9 included): the next daemon may start.
    lock = FileLock(db)
    lock.acquire()
    lock.release()
    again = FileLock(db)
    again.acquire()  # released means released, in this process too
    again.release()


# --- PostgreSQL: table creation ----------------------------------------------------------


def test_concurrent_creators_on_a_fresh_store_all_succeed(
    postgres_server: PostgresServer,
) -> None:
    """Eight processes open each of four fresh stores at the same instant: none fails.

    Without the advisory lock this failed most runs (duplicate keys in pg_type/pg_class,
    "tuple concurrently updated"): the race the issue saw between daemons started together.
    """
    n, rounds = 8, 4
    with contextlib.ExitStack() as stack:
        urls = [postgres_server.url(stack.enter_context(postgres_server.schema()))
                for _ in range(rounds)]
        go = time.time() + 4.0  # every process waits for the same start instants
        code = textwrap.dedent(f"""
            import sys, time
            from daemon.engine.store import EventLog
            failures = 0
            for k, url in enumerate({urls!r}):
                time.sleep(max(0.0, {go} + k * 0.5 - time.time()))
                try:
                    EventLog(url).close()
                except Exception as e:
                    failures += 1
                    print(type(e).__name__, e, file=sys.stderr)
            print(failures, flush=True)
        """)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, cwd=REPO,
            )
            for _ in range(n)
        ]
        results = [p.communicate(timeout=180) for p in procs]
    errors = [err[-800:] for _, err in results if err.strip()]
    assert [out.strip() for out, _ in results] == ["0"] * n, errors


# --- PostgreSQL: election and fencing ----------------------------------------------------


def _election(log: EventLog, name: str) -> Election:
    return Election(log.connect_kwargs, log.schema, name, f"http://{name}")


def test_one_leader_at_a_time_and_each_win_is_a_new_epoch(store_url: str) -> None:
    a_log, b_log = EventLog(store_url), EventLog(store_url)
    a, b = _election(a_log, "a"), _election(b_log, "b")
    try:
        first = a.try_lead()
        assert first is not None
        assert b.try_lead() is None
        lead = b.leader()
        assert lead is not None
        assert (lead.epoch, lead.leader_id, lead.address) == (first, "a", "http://a")
        assert a.renew() is True
        a.release()  # as on SIGTERM: the lock goes at once
        second = b.try_lead()
        assert second == first + 1
        assert a.renew() is False  # released: no longer leads
    finally:
        a.release()
        b.release()
        a_log.close()
        b_log.close()


def test_a_deposed_leader_cannot_commit(store_url: str) -> None:
    """A leader whose lock was lost (a partition: its session killed) is fenced out."""
    a_log, b_log = EventLog(store_url), EventLog(store_url)
    a, b = _election(a_log, "a"), _election(b_log, "b")
    a_fence, b_fence = a_log.fence_commits(), b_log.fence_commits()
    try:
        a_fence.epoch = a.try_lead()
        a_log.append([], Tracking("reactor:notify", 1))
        with pytest.raises(NotLeader):
            b_log.append([], Tracking("reactor:notify", 2))  # a follower may not write
        # The server ends a's lock session, as it does for a peer it lost.
        assert a._conn is not None
        pid = a._conn.info.backend_pid
        with psycopg.connect(**b_log.connect_kwargs, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        b_fence.epoch = b.try_lead()
        assert b_fence.epoch is not None
        # a still believes it leads (it has not heartbeat yet) and tries to commit: refused.
        with pytest.raises(Deposed):
            a_log.append([], Tracking("reactor:notify", 3))
        with pytest.raises(Deposed):
            a_log.save_checkpoint(3, b"{}")
        assert a.renew() is False  # and its heartbeat finds out
        b_log.append([], Tracking("reactor:notify", 4))
        assert a_log.position("reactor:notify") == 4
        assert a_log.load_checkpoint() is None
    finally:
        a.release()
        b.release()
        a_log.close()
        b_log.close()


def test_a_leader_that_lost_only_its_connection_keeps_its_epoch(store_url: str) -> None:
    """The lock session drops (a store restart) and nobody else took over: same epoch."""
    log = EventLog(store_url)
    a = _election(log, "a")
    fence = log.fence_commits()
    try:
        fence.epoch = a.try_lead()
        assert a._conn is not None
        pid = a._conn.info.backend_pid
        with psycopg.connect(**log.connect_kwargs, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert a.renew() is True
        assert a.epoch == fence.epoch
        log.append([], Tracking("x", 1))  # still fenced in
    finally:
        a.release()
        log.close()


def test_stores_in_two_schemas_elect_independently(postgres_server: PostgresServer) -> None:
    with postgres_server.schema() as one, postgres_server.schema() as two:
        logs = [EventLog(postgres_server.url(one)), EventLog(postgres_server.url(two))]
        elections = [_election(lg, f"r{os.getpid()}-{i}") for i, lg in enumerate(logs)]
        try:
            assert all(e.try_lead() == 1 for e in elections)
        finally:
            for e in elections:
                e.release()
            for lg in logs:
                lg.close()


# --- the Ingestor under fencing ----------------------------------------------------------


def _alert(name: str) -> Alert:
    labels = {"alertname": name}
    return Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=T0)


async def test_a_deposed_ingestor_refuses_steps_down_and_follows_its_successor(
    store_url: str,
) -> None:
    """The old leader's batch is refused, its world rebuilt from the log (the successor's
    events in it, its own uncommitted ones gone), and it asks to step down."""
    old_log, new_log = EventLog(store_url), EventLog(store_url)
    old_fence, new_fence = old_log.fence_commits(), new_log.fence_commits()
    old_el, new_el = _election(old_log, "old"), _election(new_log, "new")
    old = Ingestor(old_log, GroupingPolicy(), lambda: T0)
    new = Ingestor(new_log, GroupingPolicy(), lambda: T0)
    deposed: list[str] = []
    old.on_deposed = deposed.append
    await old.start()
    await new.start()
    try:
        old_fence.epoch = old_el.try_lead()
        await old.submit([ReceiveAlert(_alert("Before"))])
        new.leading = False
        assert old_el._conn is not None
        pid = old_el._conn.info.backend_pid
        with psycopg.connect(**new_log.connect_kwargs, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        new_fence.epoch = new_el.try_lead()
        assert await new.take_lead() > 0  # caught up with the old leader's incident
        assert any("Before" in i.group_key for i in new.world.incidents.values())
        await new.submit([ReceiveAlert(_alert("After"))])

        with pytest.raises(NotLeader):
            await old.submit([ReceiveAlert(_alert("Lost"))])
        assert deposed
        assert "fenced" in deposed[0]
        assert old.leading is False
        await old.writer_answers()  # the rebuild was queued on the writer before we heard
        titles = {i.group_key for i in old.world.incidents.values()}
        assert not any("Lost" in k for k in titles)
        assert any("After" in k for k in titles)  # rebuilt with the successor's events
        with pytest.raises(NotLeader):
            await old.submit([ReceiveAlert(_alert("Again"))])  # refused at once now
    finally:
        old_el.release()
        new_el.release()
        await old.close()
        await new.close()
        old_log.close()
        new_log.close()


def test_store_init_creates_the_tables_and_may_run_again(
    store_url: str, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    config = tmp_path / "watchkeeper.yaml"
    config.write_text(f"store: {store_url}\nstate_dir: {tmp_path}\n")
    argv = [sys.executable, "-c", "from daemon.cli.main import main; main()",
            "store", "init", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO,
                              env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert "event store ready" in done.stdout
        assert "log position 0" in done.stdout
    schema = store_url.rsplit("schema=", 1)[1]
    with psycopg.connect(host=postgres_server.host, port=postgres_server.port,
                         dbname=postgres_server.dbname, user=postgres_server.user) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        )}
    assert {"stored_events", "notification_tracking", "stored_snapshots",
            "watchkeeper_leader"} <= tables, tables


# --- followers tail the log: LISTEN/NOTIFY, polling as the fallback --------------------


async def _nothing() -> None:
    return None


async def _until(condition: Callable[[], bool], limit: float) -> bool:
    """Whether `condition` held within `limit` seconds (checked every 5 ms)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@contextlib.asynccontextmanager
async def _leader_and_follower(
    store_url: str, poll: float
) -> AsyncIterator[tuple[Ingestor, Replica]]:
    """A leading Ingestor, and a follower Replica (listening) on the same store."""
    lead_log, follow_log = EventLog(store_url), EventLog(store_url)
    lead_el, follow_el = _election(lead_log, "lead"), _election(follow_log, "follow")
    lead_log.fence_commits().epoch = lead_el.try_lead()
    follow_fence = follow_log.fence_commits()
    leader = Ingestor(lead_log, GroupingPolicy(), lambda: T0)
    follower = Ingestor(follow_log, GroupingPolicy(), lambda: T0)
    follower.leading = False
    await leader.start()
    await follower.start()
    tail = LogTail(follow_log.connect_kwargs, follow_log.schema, retry=0.2)
    replica = Replica(
        follower, follow_el, follow_fence, start_leading=_nothing, stop_leading=_nothing,
        poll=poll, tail=tail,
    )
    try:
        await replica.start()
        assert await _until(lambda: tail.listening_since is not None, 10), "never listened"
        await asyncio.sleep(0.1)  # the read that follows LISTEN
        yield leader, replica
    finally:
        await replica.close()
        lead_el.release()
        await leader.close()
        await follower.close()
        lead_log.close()
        follow_log.close()


async def _seen_after(leader: Ingestor, replica: Replica, name: str, limit: float) -> float:
    """Commit one alert on the leader; seconds from the submit until the follower has it."""
    began = time.monotonic()
    await leader.submit([ReceiveAlert(_alert(name))])
    head = leader.world.position
    seen = await _until(lambda: replica.ingestor.world.position >= head, limit)
    assert seen, f"the follower did not see {name} in {limit}s"
    return time.monotonic() - began


async def test_a_follower_reads_a_commit_when_notified_not_at_the_next_poll(
    store_url: str,
) -> None:
    async with _leader_and_follower(store_url, poll=5.0) as (leader, replica):
        assert replica.tail is not None
        heard = replica.tail.notifications
        took = [await _seen_after(leader, replica, f"Notified{i}", 1.0) for i in range(3)]
        assert max(took) < 1.0, took  # the poll is 5 s: only the notification explains it
        assert replica.tail.notifications >= heard + 3
        # Listening and read to the notified head: the follower is current, not 5 s behind.
        assert replica.lag_seconds() < 0.5
        assert replica.status()["role"] == "follower"


async def test_a_follower_without_its_listen_connection_still_reads_every_poll(
    store_url: str,
) -> None:
    async with _leader_and_follower(store_url, poll=0.5) as (leader, replica):
        tail = replica.tail
        assert tail is not None
        assert tail.backend_pid is not None
        # The listen session dies and cannot come back (its server "moved"): polling only.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        tail.connect = {**tail.connect, "port": dead_port, "connect_timeout": 1}
        with psycopg.connect(**replica.ingestor.log.connect_kwargs, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (tail.backend_pid,))
        ended = await _until(lambda: tail.listening_since is None, 5)
        assert ended, "the listener did not notice its session ended"
        heard = tail.notifications
        took = [await _seen_after(leader, replica, f"Polled{i}", 3.0) for i in range(2)]
        assert tail.notifications == heard
        assert tail.listening_since is None
        assert max(took) < 3.0, took
        # Not listening: the lag is the time since the last poll read the log.
        assert 0.0 < replica.lag_seconds() < 2.0
