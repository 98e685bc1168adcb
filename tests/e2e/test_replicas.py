"""Three daemons on one PostgreSQL store: one leads, the others follow, failover loses nothing.

Real processes on a private PostgreSQL (else the machine's, in a schema of its own), a
local chat webhook, alerts posted continuously through all three replicas. The leader is
killed with -9 once, then the next one is stopped with SIGTERM; each time another replica
must lead within the issue's goal, and afterwards no acknowledged alert is missing, no
alert group has two incidents, and no page or escalation went out twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import realstack
from chatstubs import ChatStub
from realstack import PostgresServer, wait_for
from replicas import (
    Cluster,
    Figures,
    Intake,
    in_flight_only,
    judge,
    kill,
    replica_settings,
    terminate,
)

KILL_GOAL = 10.0  # seconds from kill -9 until another replica leads
TERM_GOAL = 2.0  # from SIGTERM


@pytest.fixture
def store(postgres_server: PostgresServer) -> Iterator[str]:
    with postgres_server.schema() as name:
        yield postgres_server.url(name)


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with ChatStub(webhook_secret="replica-hook") as s:
        yield s


def test_three_replicas_fail_over_without_losing_or_repeating(
    store: str, stub: ChatStub, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.txt"
    cluster = Cluster(store, tmp_path, replica_settings(stub, tmp_path))
    cluster.start()
    intakes: list[Intake] = []
    try:
        first = cluster.leader()
        assert first is not None
        roles = sorted(cluster.role(i) for i in range(3))
        assert roles == ["follower", "follower", "leader"]
        # A follower says where the leader is, at what epoch, and how far behind it is.
        follower = cluster.replicas[(first + 1) % 3]
        ready = httpx.get(f"{follower.url}/readyz", timeout=5).text
        assert ready.startswith("ready: follower, epoch "), ready
        assert cluster.replicas[first].url in ready
        metrics = httpx.get(f"{follower.url}/metrics", timeout=5).text
        assert "watchkeeper_leader 0.0" in metrics
        assert 'watchkeeper_replica_info{leader="' + cluster.replicas[first].url in metrics

        intakes = [Intake(wk.url, f"r{i}") for i, wk in enumerate(cluster.replicas)]
        for intake in intakes:
            intake.start()
        wait_for(lambda: all(len(i.accepted) >= 10 for i in intakes), timeout=30,
                 what="alerts accepted through every replica")
        # Reads on a follower: its warm state has the leader's incidents.
        wait_for(lambda: len(follower.incidents()) >= 5, timeout=10,
                 what="the follower's state to show the leader's incidents")

        kill_at = time.monotonic()
        killed = cluster.fail_over(kill)
        time.sleep(2.0)
        stopped = cluster.fail_over(terminate)
        time.sleep(2.0)
    finally:
        for intake in intakes:
            intake.finish()
    try:
        survivor = cluster.replicas[cluster.alive()[0]]

        def settled() -> Figures | None:
            # Every incident paged, escalated (2 s later) and acted on, each action settled.
            f = judge(survivor, intakes, stub, ran)
            done = (
                f.escalations >= f.incidents
                and f.investigations_ended >= f.incidents
                and f.actions_settled >= f.actions_dispatched
            )
            return f if done else None

        try:
            wait_for(settled, timeout=30, what="every incident escalated and acted on")
        finally:
            print(judge(survivor, intakes, stub, ran))
        time.sleep(1.0)  # a late duplicate would show up by now
        figures = judge(survivor, intakes, stub, ran)
        print(
            f"takeover after kill -9: {killed:.2f}s, after SIGTERM: {stopped:.2f}s; "
            f"{figures}"
        )
        assert killed < KILL_GOAL, survivor.log_tail()
        assert stopped < TERM_GOAL, survivor.log_tail()
        assert figures.accepted > 50
        assert figures.incidents > 5  # the five groups and the bursts
        assert figures.problems(allow_in_flight=True) == []
        # A page repeated only if the killed leader had sent it without recording it yet
        # (README, "Replicas", limits); SIGTERM hands over with nothing in flight.
        assert in_flight_only(figures, [kill_at]) == [], figures
        # Each incident: paged once when opened, escalated, one action dispatched, which
        # ran once (or, dispatched by a leader that died, is an unknown outcome for a person).
        assert figures.chat_by_event["incident_opened"] == figures.incidents, figures
        assert figures.escalations >= figures.incidents, figures
        # One action per incident (never two: `problems`), even for an investigation stopped
        # between recording its proposal call and the proposal: it proposes when it resumes.
        assert figures.actions_dispatched >= figures.incidents, figures
        assert figures.actions_run + figures.actions_unknown >= figures.actions_dispatched
        assert stub.problems() == []
    finally:
        cluster.stop()


def test_a_second_daemon_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    first = realstack.Watchkeeper(tmp_path / "a", str(tmp_path / "events.db"))
    second = realstack.Watchkeeper(tmp_path / "b", str(tmp_path / "events.db"))
    first.start()
    try:
        assert second.child is not None
        second.child.start()
        wait_for(lambda: not second.child.running, timeout=60, what="the second daemon to exit")
        assert first.child is not None
        assert second.child.proc is not None
        assert second.child.proc.returncode == 1
        log = second.log_tail()
        assert "in use by another watchkeeper" in log
        assert f"pid {first.child.proc.pid}" in log  # the process holding the store is named
        assert first.child.running
    finally:
        first.stop()
