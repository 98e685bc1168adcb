"""Several watchkeeper processes on one PostgreSQL store: start, post through all, fail over.

Shared by tests/e2e/test_replicas.py and bench/failover.py. Everything is measured from
outside: HTTP answers, the event log as the API serves it, and what a local chat webhook
received.
"""

from __future__ import annotations

import collections
import itertools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chatstubs import ChatStub
from realstack import Watchkeeper, wait_for

SECRET = "replica-hook"
GROUPS = 5  # alert groups (alertname Load0..Load4): each must have one incident, ever
ESCALATE_AFTER = "2s"


def replica_settings(stub: ChatStub) -> dict[str, Any]:
    """Pages on every new incident and escalates 2 s later: chat and timers under failover."""
    return {
        "notifications": {
            "channels": {
                "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET}
            },
            "policies": [
                {
                    "name": "page",
                    "match": ['alertname=~"Load.*"'],
                    "levels": [
                        {"channels": ["pager"]},
                        {"channels": ["pager"], "delay": ESCALATE_AFTER},
                    ],
                }
            ],
        },
    }


@dataclass
class Cluster:
    """`n` daemons on one store, each on its own loopback port."""

    store: str
    workdir: Path
    settings: dict[str, Any]
    n: int = 3
    replicas: list[Watchkeeper] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.replicas = [
            Watchkeeper(self.workdir / f"r{i}", self.store, settings=self.settings)
            for i in range(self.n)
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Start every replica at once (their tables are created under a lock), wait ready."""
        for wk in self.replicas:
            assert wk.child is not None
            wk.child.start()
        for wk in self.replicas:
            wk.wait_ready(timeout)

    def stop(self) -> None:
        """SIGTERM whatever still runs."""
        for wk in self.replicas:
            if wk.child is not None and wk.child.running:
                wk.stop()

    def alive(self) -> list[int]:
        """Indexes of the replicas whose process runs."""
        return [i for i, wk in enumerate(self.replicas) if wk.child and wk.child.running]

    def role(self, i: int) -> str:
        """`leader`, `follower`, or `down` (no answer)."""
        try:
            st = httpx.get(f"{self.replicas[i].url}/api/v1/status", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return "down"
        return str((st.get("replica") or {}).get("role", "down"))

    def leader(self) -> int | None:
        """The index of the replica that leads now, if exactly one says so."""
        leaders = [i for i in self.alive() if self.role(i) == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def fail_over(self, how: Callable[[Watchkeeper], object], timeout: float = 30.0) -> float:
        """Stop the leader with `how` (kill or stop); seconds until another one leads."""
        old = self.leader()
        assert old is not None, "no single leader before the failover"
        began = time.monotonic()
        how(self.replicas[old])

        def other_leads() -> bool:
            now = self.leader()
            return now is not None and now != old

        wait_for(other_leads, timeout=timeout, what="a new leader", interval=0.05)
        return time.monotonic() - began


def kill(wk: Watchkeeper) -> None:
    """kill -9 (and reap)."""
    wk.kill()


def terminate(wk: Watchkeeper) -> None:
    """SIGTERM, without waiting for the process to finish draining."""
    assert wk.child is not None
    assert wk.child.proc is not None
    wk.child.proc.send_signal(signal.SIGTERM)


@dataclass
class Intake:
    """Posts one new alert at a time to one replica until stopped; keeps what was accepted."""

    url: str
    name: str
    accepted: list[str] = field(default_factory=list)
    refused: collections.Counter[int] = field(default_factory=collections.Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Post in a thread of its own."""
        self.thread = threading.Thread(target=self._run, name=f"intake-{self.name}", daemon=True)
        self.thread.start()

    def finish(self) -> None:
        """Stop posting and wait for the request in flight."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                instance = f"{self.name}-{n}"
                alert = {"labels": {"alertname": f"Load{n % GROUPS}", "instance": instance}}
                try:
                    r = client.post(f"{self.url}/api/v2/alerts", json=[alert])
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                if 200 <= status < 300:
                    self.accepted.append(instance)
                else:
                    self.refused[status] += 1
                    time.sleep(0.05)
                time.sleep(0.02)


@dataclass
class Figures:
    """What a failover run is judged on."""

    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    groups_with_two_incidents: list[str] = field(default_factory=list)
    chat_sent_twice: int = 0
    chat_messages: int = 0
    chat_by_event: dict[str, int] = field(default_factory=dict)
    escalations_fired_twice: int = 0
    escalations: int = 0
    actions_dispatched_twice: int = 0
    events: int = 0

    def problems(self) -> list[str]:
        """Every figure that must be zero and is not."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged alerts lost: {self.lost[:5]}")
        if self.groups_with_two_incidents:
            out.append(f"groups with two incidents: {self.groups_with_two_incidents}")
        if self.chat_sent_twice:
            out.append(f"{self.chat_sent_twice} chat messages sent twice")
        if self.escalations_fired_twice:
            out.append(f"{self.escalations_fired_twice} escalation deadlines fired twice")
        if self.actions_dispatched_twice:
            out.append(f"{self.actions_dispatched_twice} actions dispatched twice")
        return out


def judge(wk: Watchkeeper, intakes: list[Intake], stub: ChatStub) -> Figures:
    """Read the log through one live replica and the webhook's requests; count the damage."""
    events = wk.events()
    fired = {
        e["data"]["alert"]["labels"].get("instance")
        for e in events
        if e["type"] == "AlertFired"
    }
    accepted = [a for i in intakes for a in i.accepted]
    opened = collections.Counter(
        e["data"]["group_key"] for e in events if e["type"] == "IncidentOpened"
    )
    deadlines = collections.Counter(e["stream"] for e in events if e["type"] == "DeadlineFired")
    dispatched = collections.Counter(
        e["data"]["idempotency_key"] for e in events if e["type"] == "ActionDispatched"
    )
    sent = collections.Counter(
        (h.body.get("incident_id"), h.body.get("event")) for h in stub.at(stub.WEBHOOK)
    )
    return Figures(
        accepted=len(accepted),
        lost=[a for a in accepted if a not in fired],
        groups_with_two_incidents=sorted(g for g, c in opened.items() if c > 1),
        chat_sent_twice=sum(c - 1 for c in sent.values()),
        chat_messages=sum(sent.values()),
        chat_by_event=dict(collections.Counter(event for _, event in sent.elements())),
        escalations_fired_twice=sum(c - 1 for c in deadlines.values()),
        escalations=sum(1 for h in stub.at(stub.WEBHOOK) if h.body.get("event") == "escalated"),
        actions_dispatched_twice=sum(c - 1 for c in dispatched.values()),
        events=len(events),
    )
