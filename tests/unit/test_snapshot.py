"""Checkpoints serialized in a forked child (daemon/snapshot.py) and the Ingestor using them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from domainkit import T0, mk

from daemon.domain import GroupingPolicy
from daemon.domain.commands import ReceiveAlert
from daemon.engine.ingest import Ingestor
from daemon.engine.snapshot import Snapshot, SnapshotFailed
from daemon.engine.store import EventLog

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_the_child_renders_state_as_it_was_at_the_fork() -> None:
    state: dict[str, Any] = {"alerts": [f"a{i}" for i in range(50_000)]}
    child = Snapshot.fork(lambda: json.dumps(state).encode())
    expected = json.dumps(state).encode()
    # The parent goes on changing its state; the child has its own copy from the fork.
    state["alerts"].clear()
    size, blob = await child.result()
    assert size == len(expected)
    assert zlib.decompress(blob) == expected
    assert _gone(child.pid), "the child was reaped"


async def test_a_render_that_fails_is_reported() -> None:
    def render() -> bytes:
        raise RuntimeError("cannot serialize")

    child = Snapshot.fork(render)
    with pytest.raises(SnapshotFailed, match="exited with status 1"):
        await child.result()


async def test_cancelling_kills_the_child() -> None:
    child = Snapshot.fork(lambda: (time.sleep(60), b"")[1])
    waiting = asyncio.create_task(child.result())
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert _gone(child.pid)


async def test_a_signal_to_the_child_kills_it_and_never_reaches_the_parent() -> None:
    # asyncio's signal handling writes signal numbers to a wakeup fd the child inherits:
    # without resetting its handlers, SIGTERM to the child would stop the parent.
    loop = asyncio.get_running_loop()
    got: list[int] = []
    loop.add_signal_handler(signal.SIGTERM, got.append, signal.SIGTERM)
    try:
        child = Snapshot.fork(lambda: (time.sleep(60), b"")[1])
        await asyncio.sleep(0.2)  # the child has reset its handlers by now
        os.kill(child.pid, signal.SIGTERM)
        with pytest.raises(SnapshotFailed, match="killed by SIGTERM"):
            await asyncio.wait_for(child.result(), 10)
        await asyncio.sleep(0.2)
        assert got == [], "the child's signal reached the parent"
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """kill -9 of the daemon leaves no checkpoint writer behind."""
    script = textwrap.dedent(
        """
        import asyncio, sys, time
        from daemon.engine.snapshot import Snapshot

        async def main():
            child = Snapshot.fork(lambda: (time.sleep(60), b"")[1])
            print(child.pid, flush=True)
            await child.result()

        asyncio.run(main())
        """
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        time.sleep(0.3)
        assert not _gone(pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), "the snapshot child outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)


# --- the Ingestor ----------------------------------------------------------------------


class _Clock:
    def __call__(self) -> Any:
        return T0


async def _ingestor(tmp_path: Path, **kwargs: Any) -> tuple[Ingestor, EventLog]:
    log = await asyncio.to_thread(EventLog, f"sqlite:///{tmp_path}/events.db")
    ing = Ingestor(log, GroupingPolicy(), _Clock(), checkpoint_every=10, **kwargs)
    await ing.start()
    return ing, log


@contextlib.asynccontextmanager
async def _running(tmp_path: Path) -> AsyncIterator[tuple[Ingestor, EventLog]]:
    """An Ingestor on a SQLite log in tmp_path, closed (final checkpoint) on the way out."""
    ing, log = await _ingestor(tmp_path)
    try:
        yield ing, log
    finally:
        await ing.close()
        await asyncio.to_thread(log.close)


async def _fire(ing: Ingestor, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await ing.submit([ReceiveAlert(mk("Disk", instance=f"h{i}"))])


async def _world_at_checkpoint(log: EventLog) -> tuple[int, dict[str, Any]]:
    cp = await asyncio.to_thread(log.load_checkpoint)
    assert cp is not None
    position, blob = cp
    return position, json.loads(blob)["world"]


async def test_intake_goes_on_while_a_child_writes_the_checkpoint(tmp_path: Path) -> None:
    async with _running(tmp_path) as (ing, log):
        await _fire(ing, 15)
        await ing.checkpoint_written()
        assert ing.checkpoints_in_child == 1
        position, world = await _world_at_checkpoint(log)
        # The checkpoint holds the world as committed at the fork, and nothing later.
        assert 10 <= position <= ing.world.position
        assert len(world["alerts"]) == position - 1  # one IncidentOpened, then AlertFired each


async def test_without_fork_the_checkpoint_is_written_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(render: Any, level: int = 1) -> Snapshot:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(Snapshot, "fork", staticmethod(refuse))
    async with _running(tmp_path) as (ing, log):
        await _fire(ing, 15)
        await ing.writer_answers()
        assert ing.checkpoints_in_child == 0
        position, world = await _world_at_checkpoint(log)
        assert len(world["alerts"]) == position - 1
        assert "writing it in-process" in caplog.text


async def test_after_a_failed_child_the_next_checkpoint_is_written_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_fork = Snapshot.fork
    failing = [True]

    def fork(render: Any, level: int = 1) -> Snapshot:
        if failing[0]:
            failing[0] = False
            return real_fork(lambda: os._exit(3))  # as a child the OOM killer took would
        return real_fork(render, level)

    monkeypatch.setattr(Snapshot, "fork", staticmethod(fork))
    async with _running(tmp_path) as (ing, log):
        await _fire(ing, 9)  # position 10: IncidentOpened, then one AlertFired each
        assert ing.world.position == 10
        await ing.checkpoint_written()
        assert "exited with status 3" in caplog.text
        assert await asyncio.to_thread(log.load_checkpoint) is None
        # Still due, so the next batch checkpoints, in-process this time (after answering
        # its callers: the writer thread has the checkpoint queued behind that batch).
        await _fire(ing, 1, start=9)
        await ing.writer_answers()
        position, world = await _world_at_checkpoint(log)
        assert position == ing.world.position == 11
        assert len(world["alerts"]) == 10
        assert ing.checkpoints_in_child == 0
        # And the one after that goes back to a child.
        await _fire(ing, 40, start=10)
        await ing.checkpoint_written()
        assert ing.checkpoints_in_child >= 1
        position, world = await _world_at_checkpoint(log)
        assert len(world["alerts"]) == position - 1 > 10


def _stuck_children(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every checkpoint child hang (as on a lock held at the fork); their pids."""
    real_fork = Snapshot.fork
    pids: list[int] = []

    def fork(render: Any, level: int = 1) -> Snapshot:
        child = real_fork(lambda: time.sleep(3600) or b"")
        pids.append(child.pid)
        return child

    monkeypatch.setattr(Snapshot, "fork", staticmethod(fork))
    return pids


async def test_a_stuck_child_is_killed_and_the_next_checkpoint_written_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pids = _stuck_children(monkeypatch)
    async with _running(tmp_path) as (ing, log):
        ing.child_timeout = 0.5
        await _fire(ing, 15)
        assert len(pids) == 1
        await asyncio.wait_for(ing.checkpoint_written(), 30)
        assert _gone(pids[0]), "the stuck child was killed and reaped"
        assert "did not deliver within 0.5s and was killed" in caplog.text
        assert await asyncio.to_thread(log.load_checkpoint) is None
        await _fire(ing, 1, start=15)
        await ing.writer_answers()
        position, world = await _world_at_checkpoint(log)
        assert position == ing.world.position
        assert len(world["alerts"]) == 16
        assert len(pids) == 1, "written in-process, no second child"


async def test_close_stops_a_running_child_and_checkpoints_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = _stuck_children(monkeypatch)
    ing, log = await _ingestor(tmp_path)
    try:
        # Position 10 (IncidentOpened, then one AlertFired each): the child forks there, and
        # nothing comes after it, so only the close's own checkpoint can store position 10.
        await _fire(ing, 9)
        assert len(pids) == 1
        assert not _gone(pids[0])
        await asyncio.wait_for(ing.close(), 30)  # not the child's hour
        assert _gone(pids[0])
        position, world = await _world_at_checkpoint(log)
        assert position == ing.world.position == 10
        assert len(world["alerts"]) == 9
    finally:
        await asyncio.to_thread(log.close)


async def test_the_child_offers_itself_to_the_oom_killer_first() -> None:
    def render() -> bytes:
        with open("/proc/self/oom_score_adj") as f:
            return f.read().strip().encode()

    child = Snapshot.fork(render)
    _, blob = await child.result()
    assert zlib.decompress(blob) == b"1000"
    mine = await asyncio.to_thread(Path("/proc/self/oom_score_adj").read_text)
    assert mine.strip() != "1000", "the parent keeps its own score"


async def test_the_forked_checkpoint_rebuilds_the_same_world(tmp_path: Path) -> None:
    ing, log = await _ingestor(tmp_path)
    try:
        await _fire(ing, 15)
        await ing.checkpoint_written()
        expected = ing.world.model_dump(mode="json")
        position, _ = await _world_at_checkpoint(log)
        assert position < ing.world.position, "want a checkpoint plus a tail of the log"
    finally:
        # As kill -9 would: no final checkpoint.
        assert ing._task is not None
        ing._task.cancel()
        await asyncio.gather(ing._task, return_exceptions=True)
        ing._task = None
        ing.writer.shutdown(wait=True)
        await asyncio.to_thread(log.close)
    async with _running(tmp_path) as (again, _):
        assert again.world.model_dump(mode="json") == expected
