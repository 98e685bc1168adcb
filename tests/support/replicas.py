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


RUNBOOK = """---
id: load
version: 1
title: Load
match:
  - alertname=~"(Load|Burst).*"
tools: [alert_context]
diagnostics:
  - id: ctx
    tool: alert_context
actions:
  - id: shed_load
    kind: shell
    argv: ["{script}", "{{params.group}}"]
    timeout: 30s
    risk: low
    params:
      type: object
      properties:
        group: {{type: string, pattern: '^[A-Za-z0-9]+$'}}
      required: [group]
      additionalProperties: false
default_action:
  action: shed_load
  params:
    group: "{{labels.alertname}}"
  when:
    all: ["ctx.firing > 0"]
  rationale: The group is loaded; shed load.
evidence_max_age: 10m
---
# Load

Shed load (the action appends a line to a file: how often it really ran is counted there).
"""


def replica_settings(stub: ChatStub, workdir: Path) -> dict[str, Any]:
    """Every new incident is paged, escalated 2 s later, investigated, and acted on once
    (autonomously, by a script that appends a line to `workdir/ran.txt`): chat, timers,
    agent and actions all under failover."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "shed-load"
    script.write_text(
        f'#!/bin/sh\necho "$1 $WATCHKEEPER_IDEMPOTENCY_KEY" >> "{workdir / "ran.txt"}"\n'
    )
    script.chmod(0o755)
    runbooks = workdir / "runbooks"
    runbooks.mkdir(exist_ok=True)
    (runbooks / "load.md").write_text(RUNBOOK.format(script=script))
    return {
        "agent": {"runbooks_dir": str(runbooks), "default_runbook": None},
        "actions": {"mode": "autonomous", "shell": {"allow": [str(script)]}},
        "notifications": {
            "storm": {"max_messages": 1000},  # every message is counted, none summarized
            "channels": {
                "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET}
            },
            "policies": [
                {
                    "name": "page",
                    "match": ['alertname=~"(Load|Burst).*"'],
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
    burst_every: int = 10  # every n-th alert opens a group of its own
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
                # Mostly repeats into five groups; every n-th a group of its own (a new
                # incident: a page, an escalation, an investigation and an action).
                burst = n % self.burst_every == self.burst_every - 1
                group = f"Burst{self.name}x{n}" if burst else f"Load{n % GROUPS}"
                # No `instance` label: the action's target is then this host (local).
                alert = {"labels": {"alertname": group, "seq": instance}}
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
    chat_twice: list[tuple[str | None, str | None]] = field(default_factory=list)
    # When the first copy of each message sent twice arrived (time.monotonic()).
    chat_twice_first_at: list[float] = field(default_factory=list)
    chat_twice_at: list[list[float]] = field(default_factory=list)
    # Messages a killed leader began sending without recording how it went, by kind
    # ("opened", "escalated"): recorded as delivery unknown by its successor, not re-sent.
    chat_unknown: dict[str, int] = field(default_factory=dict)
    escalations_fired_twice: int = 0
    escalations: int = 0
    incidents: int = 0
    investigations_ended: int = 0
    actions_dispatched: int = 0
    actions_dispatched_twice: int = 0
    actions_run: int = 0
    actions_settled: int = 0  # dispatched actions with an outcome (succeeded, failed, unknown)
    actions_unknown: int = 0
    actions_run_twice: int = 0
    events: int = 0

    def problems(self, kills: int = 0) -> list[str]:
        """Every figure that must be zero and is not.

        `kills`: how many leaders were killed with -9. Each may leave the messages it was
        sending without outcome (at most one event's: the notify reaction handles one at a
        time; one message here, with one channel); its successor records them as delivery
        unknown and never sends them again.
        """
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged alerts lost: {self.lost[:5]}")
        if self.groups_with_two_incidents:
            out.append(f"groups with two incidents: {self.groups_with_two_incidents}")
        if self.chat_sent_twice:
            out.append(f"{self.chat_sent_twice} chat messages sent twice: {self.chat_twice}")
        if sum(self.chat_unknown.values()) > kills:
            out.append(f"{self.chat_unknown} messages of unknown delivery after {kills} kills")
        if self.escalations_fired_twice:
            out.append(f"{self.escalations_fired_twice} escalation deadlines fired twice")
        if self.actions_dispatched_twice:
            out.append(f"{self.actions_dispatched_twice} actions dispatched twice")
        if self.actions_run_twice:
            out.append(f"{self.actions_run_twice} actions run twice for one group")
        return out


def judge(wk: Watchkeeper, intakes: list[Intake], stub: ChatStub, ran: Path) -> Figures:
    """Read the log through one live replica and the webhook's requests; count the damage."""
    events = wk.events()
    fired = {
        e["data"]["alert"]["labels"].get("seq")
        for e in events
        if e["type"] == "AlertFired"
    }
    accepted = [a for i in intakes for a in i.accepted]
    opened = collections.Counter(
        e["data"]["group_key"] for e in events if e["type"] == "IncidentOpened"
    )
    deadlines = collections.Counter(e["stream"] for e in events if e["type"] == "DeadlineFired")
    dispatched = collections.Counter(
        e["data"]["incident_id"] for e in events if e["type"] == "ActionDispatched"
    )
    outcomes = collections.Counter(
        e["type"] for e in events
        if e["type"] in ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown")
    )
    lines = ran.read_text().split("\n") if ran.exists() else []
    runs = collections.Counter(line.split()[0] for line in lines if line.strip())
    # One message is its content: a resend repeats it all but the delivery id and time.
    sent = collections.Counter(
        (h.body.get("incident_id"), h.body.get("event"), h.body.get("headline"),
         h.body.get("text"), h.body.get("note"))
        for h in stub.at(stub.WEBHOOK)
    )
    twice = [k[:2] for k, c in sent.items() if c > 1]
    unknown = collections.Counter(
        e["data"]["kind"] for e in events
        if e["type"] == "NotificationFailed"
        and e["data"]["reason"].startswith("delivery unknown")
    )
    arrivals: dict[tuple[Any, ...], list[float]] = collections.defaultdict(list)
    for h in stub.at(stub.WEBHOOK):
        key = (h.body.get("incident_id"), h.body.get("event"), h.body.get("headline"),
               h.body.get("text"), h.body.get("note"))
        arrivals[key].append(h.at)
    twice_first_at = [arrivals[k][0] for k, c in sent.items() if c > 1]
    twice_at = [arrivals[k] for k, c in sent.items() if c > 1]
    return Figures(
        accepted=len(accepted),
        lost=[a for a in accepted if a not in fired],
        groups_with_two_incidents=sorted(g for g, c in opened.items() if c > 1),
        chat_sent_twice=sum(c - 1 for c in sent.values()),
        chat_twice=twice,
        chat_twice_first_at=twice_first_at,
        chat_twice_at=twice_at,
        chat_unknown=dict(unknown),
        chat_messages=sum(sent.values()),
        chat_by_event=dict(collections.Counter(k[1] for k in sent)),  # distinct messages
        escalations_fired_twice=sum(c - 1 for c in deadlines.values()),
        escalations=sum(1 for h in stub.at(stub.WEBHOOK) if h.body.get("event") == "escalated"),
        incidents=sum(opened.values()),
        investigations_ended=sum(
            1 for e in events
            if e["type"] in ("InvestigationConcluded", "InvestigationEscalated",
                             "InvestigationAbandoned")
        ),
        actions_dispatched=sum(dispatched.values()),
        actions_dispatched_twice=sum(c - 1 for c in dispatched.values()),
        actions_run=sum(runs.values()),
        actions_settled=sum(outcomes.values()),
        actions_unknown=outcomes["ActionOutcomeUnknown"],
        actions_run_twice=sum(c - 1 for c in runs.values()),
        events=len(events),
    )
