"""Three daemons on one PostgreSQL store: one leads, the others follow, failover loses nothing.

Real processes on a private PostgreSQL (else the machine's, in a schema of its own), a
local chat webhook, alerts posted continuously through all three replicas. The leader is
killed with -9 once, then the next one is stopped with SIGTERM; each time another replica
must lead within the issue's goal, and afterwards no acknowledged alert is missing, no
alert group has two incidents, and no page or escalation went out twice (not even the
one the killed leader was sending: it is recorded as delivery unknown).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from chatstubs import ChatStub
from realstack import PostgresServer, wait_for
from replicas import (
    ESCALATE_AFTER,
    SECRET,
    Cluster,
    Figures,
    Intake,
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
    with ChatStub(webhook_secret=SECRET) as s:
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
                # An escalation the killed leader was sending is recorded as delivery unknown.
                f.escalations + f.chat_unknown.get("escalated", 0) >= f.incidents
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
        # No chat message twice, not even the one the killed leader was sending: its
        # successor records it as delivery unknown (one at most per kill -9; SIGTERM hands
        # over with nothing in flight) and never sends it again.
        assert figures.problems(kills=1) == [], figures
        # Each incident: paged once when opened (or that page's delivery is unknown: the
        # escalation pages it anyway), escalated, one action dispatched, which ran once (or,
        # dispatched by a leader that died, is an unknown outcome for a person).
        # (One of unknown delivery may have arrived all the same.)
        opened = figures.chat_by_event.get("incident_opened", 0)
        unknown = figures.chat_unknown.get("opened", 0)
        assert figures.incidents - unknown <= opened <= figures.incidents, figures
        assert figures.escalations + figures.chat_unknown.get("escalated", 0) >= (
            figures.incidents
        ), figures
        # One action per incident (never two: `problems`), even for an investigation stopped
        # between recording its proposal call and the proposal: it proposes when it resumes.
        assert figures.actions_dispatched >= figures.incidents, figures
        assert figures.actions_run + figures.actions_unknown >= figures.actions_dispatched
        assert stub.problems() == []
    finally:
        cluster.stop()


def test_a_leader_killed_after_the_receiver_got_a_page_its_successor_never_resends(
    store: str, stub: ChatStub, tmp_path: Path
) -> None:
    """kill -9 of the leader in the window between a page's arrival and its record: the
    next leader records it as delivery unknown and never sends it again; the next
    escalation step pages the incident."""
    settings = {
        "notifications": {
            "channels": {
                "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET}
            },
            "policies": [
                {
                    "name": "page",
                    "levels": [
                        {"channels": ["pager"]},
                        {"channels": ["pager"], "delay": ESCALATE_AFTER},
                    ],
                }
            ],
        }
    }
    cluster = Cluster(store, tmp_path, settings, n=2)
    cluster.start()
    try:
        first = cluster.leader()
        assert first is not None
        leader = cluster.replicas[first]
        survivor = cluster.replicas[1 - first]

        def kill_on_first_page(got: Any) -> None:
            if got.path == stub.WEBHOOK and got.body.get("event") == "incident_opened":
                stub.on_receive = None
                leader.kill()  # before the webhook answers: the leader cannot record it

        stub.on_receive = kill_on_first_page
        r = httpx.post(
            f"{survivor.url}/api/v2/alerts",  # forwarded to the leader
            json=[{"labels": {"alertname": "DiskFull", "severity": "critical"}}],
            timeout=30,
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: cluster.alive() == [1 - first], timeout=30, what="the leader killed")
        wait_for(lambda: cluster.leader() == 1 - first, timeout=30, what="a new leader")

        def unknown() -> list[dict[str, Any]]:
            return [
                e
                for e in survivor.events()
                if e["type"] == "NotificationFailed"
                and e["data"]["reason"].startswith("delivery unknown")
            ]

        wait_for(unknown, timeout=30, what="the page recorded as delivery unknown")
        wait_for(lambda: len(pages(stub)) >= 2, timeout=30, what="the escalation page")
        time.sleep(1.0)  # a repeat would show up by now
        assert pages(stub) == ["incident_opened", "escalated"], survivor.log_tail()
        assert [e["data"]["kind"] for e in unknown()] == ["opened"]
    finally:
        stub.on_receive = None
        cluster.stop()
    assert stub.problems() == []


def pages(stub: ChatStub) -> list[str]:
    """The pages the webhook received (follow-ups aside)."""
    events = [h.body["event"] for h in stub.at(stub.WEBHOOK)]
    return [e for e in events if e in ("incident_opened", "escalated")]


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
