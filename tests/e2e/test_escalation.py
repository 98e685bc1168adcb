"""Escalation chains on durable deadlines, and the notification log, across restarts.

In-process tests run the real Ingestor, event log (SQLite), Reactor, TimerService and
notifiers against local platform stubs, with an injected clock: time moves only when the
test moves it. One test runs the daemon as a process with real time and stops it across
a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from chatstubs import ChatStub, Reply
from realstack import Watchkeeper, wait_for

from daemon.config.notify import NotificationsConfig
from daemon.domain import (
    Acknowledge,
    Alert,
    GroupingPolicy,
    ReceiveAlert,
    ResolveIncident,
    fingerprint,
)
from daemon.domain.events import DomainEvent
from daemon.domain.notification_model import (
    IncidentEscalated,
    NotificationAttempted,
    NotificationFailed,
    NotificationHeld,
    NotificationSent,
    RecordSent,
)
from daemon.domain.timer_model import DeadlineCancelled, DeadlineFired, DeadlineSet
from daemon.engine.ingest import Ingestor
from daemon.engine.outage import StoreUnavailable
from daemon.engine.reactor import Reactor
from daemon.engine.store import EventLog
from daemon.engine.timers import TimerService
from daemon.notify.reaction import NotifyReaction
from daemon.runtime.wiring import build_notifiers

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "hook-secret"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


async def no_sleep(seconds: float) -> None:
    """Retries in these tests pass no time."""


class Rig:
    """The notification path of the daemon, restartable on the same event log."""

    def __init__(self, db: Path, stub: ChatStub, clock: Clock, config: dict[str, Any]) -> None:
        self.db, self.stub, self.clock = db, stub, clock
        self.config = NotificationsConfig.model_validate(config)
        self.running = False

    async def start(self) -> None:
        self.log = EventLog(f"sqlite:///{self.db}")
        self.ing = Ingestor(self.log, GroupingPolicy(group_by=("alertname",)), self.clock)
        await self.ing.start()
        self.reaction = NotifyReaction(
            self.ing,
            build_notifiers(self.config),
            self.config,
            self.clock,
            console_url="https://wk.example",
            sleep=no_sleep,
        )
        # Highest position the reaction must have seen before the rig is settled.
        self.last_interesting = max(
            (r.id for r in self.log.read(0, 100_000) if self.reaction.interested(r.event)),
            default=0,
        )
        self.ing.listeners.append(self._note)
        self.reactor = Reactor(self.ing, [self.reaction])
        await self.reactor.start()
        self.timers = TimerService(self.ing, self.clock, max_idle=0.05)
        await self.timers.start()
        self.running = True

    def _note(self, position: int, event: DomainEvent) -> None:
        if self.reaction.interested(event):
            self.last_interesting = max(self.last_interesting, position)

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        await self.timers.close()
        await self.reactor.close()
        await self.ing.close()
        self.log.close()

    async def settle(self, patience: float = 20.0) -> None:
        """Fire what is due and wait until the reaction has handled everything committed."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            await self.timers.fire_due()
            caught_up = self.reactor.positions.get("notify", 0) >= self.last_interesting
            if caught_up and not self.ing.world.deadlines.due(self.clock()):
                # One more look: the last reaction may have set a deadline that is due now.
                await asyncio.sleep(0.02)
                if self.reactor.positions.get("notify", 0) >= self.last_interesting:
                    return
            await asyncio.sleep(0.01)
        raise TimeoutError("notify reaction did not catch up")

    async def fire(self, name: str = "DiskFull", severity: str = "critical") -> UUID:
        labels = {"alertname": name, "severity": severity, "instance": "web1"}
        alert = Alert(
            fingerprint=fingerprint(labels),
            labels=labels,
            annotations={"summary": f"{name} on web1"},
            starts_at=self.clock(),
            ends_at=self.clock() + timedelta(days=1),
        )
        await self.ing.submit([ReceiveAlert(alert)])
        return self.ing.world.groups[f'{{alertname="{name}"}}']

    def events(self, kind: type[DomainEvent]) -> list[Any]:
        return [r.event for r in self.log.read(0, 100_000) if isinstance(r.event, kind)]


def channels(stub: ChatStub) -> dict[str, Any]:
    return {
        "oncall": {
            "type": "slack",
            "token": "xoxb-test-token",
            "channel": "C0ONCALL",
            "api_url": stub.url(stub.SLACK_API),
        },
        "leads": {"type": "teams", "url": stub.url(stub.TEAMS)},
        "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET},
        "chat": {"type": "mattermost", "url": stub.url(stub.MATTERMOST)},
        "hook": {"type": "slack_webhook", "url": stub.url(stub.SLACK_HOOK)},
    }


THREE_LEVELS = [
    {
        "name": "critical",
        "match": ['severity="critical"'],
        "levels": [
            {"channels": ["oncall"]},
            {"channels": ["leads", "pager"], "delay": "10m"},
            {"channels": ["chat"], "delay": "10m"},
        ],
    }
]


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with ChatStub(webhook_secret=SECRET) as s:
        yield s


@pytest.fixture
async def rig(tmp_path: Path, stub: ChatStub) -> AsyncIterator[Rig]:
    r = Rig(
        tmp_path / "events.db",
        stub,
        Clock(T0),
        {"channels": channels(stub), "policies": THREE_LEVELS},
    )
    await r.start()
    yield r
    await r.stop()
    assert stub.problems() == []


def slack_calls(stub: ChatStub) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in stub.at(stub.SLACK_API)]


async def test_levels_fire_in_order_and_stop_on_acknowledge(rig: Rig, stub: ChatStub) -> None:
    inc = await rig.fire()
    await rig.settle()
    assert slack_calls(stub) == ["chat.postMessage"]
    assert stub.at(stub.TEAMS) == []
    assert stub.at(stub.WEBHOOK) == []

    rig.clock.advance(minutes=9, seconds=59)
    await rig.settle()
    assert stub.at(stub.TEAMS) == []

    rig.clock.advance(seconds=1)
    await rig.settle()
    assert len(stub.at(stub.TEAMS)) == 1
    [page] = stub.at(stub.WEBHOOK)
    assert page.body["event"] == "escalated"
    assert page.body["escalation"] == {
        "policy": "critical",
        "level": 1,
        "round": 0,
    }
    esc = [e for e in rig.log.stream(inc) if isinstance(e, IncidentEscalated)]
    assert [(e.level, e.channels) for e in esc] == [(1, ("leads", "pager"))]

    rig.clock.advance(minutes=5)
    await rig.ing.execute(Acknowledge(inc, "alice", "looking"))
    await rig.settle()
    ts = next(iter(stub.slack_messages))
    assert slack_calls(stub) == ["chat.postMessage", "chat.update", "chat.postMessage"]
    update, reply = (r.body for r in stub.at(stub.SLACK_API)[1:])
    assert update["ts"] == ts
    assert "Acknowledged" in update["blocks"][0]["text"]["text"]
    assert reply["thread_ts"] == ts
    assert reply["text"] == "Acknowledged by alice: looking"
    assert [r.body["event"] for r in stub.at(stub.WEBHOOK)] == ["escalated", "acknowledged"]
    assert len(stub.at(stub.TEAMS)) == 2
    [cancelled] = rig.events(DeadlineCancelled)
    assert (cancelled.kind, cancelled.reason) == ("escalation", "Acknowledged by alice: looking")

    rig.clock.advance(hours=2)
    await rig.settle()
    assert stub.at(stub.MATTERMOST) == []
    assert not rig.ing.world.deadlines.about(inc)


async def test_repeats_page_again_until_resolved(tmp_path: Path, stub: ChatStub) -> None:
    policy = [
        {
            "name": "repeat",
            "levels": [
                {"channels": ["oncall"], "repeat": 2, "repeat_every": "5m"},
                {"channels": ["pager"], "delay": "10m"},
            ],
        }
    ]
    r = Rig(tmp_path / "e.db", stub, Clock(T0), {"channels": channels(stub), "policies": policy})
    await r.start()
    try:
        inc = await r.fire(severity="warning")
        await r.settle()
        for _ in range(2):
            r.clock.advance(minutes=5)
            await r.settle()
        calls = stub.at(stub.SLACK_API)
        assert slack_calls(stub) == ["chat.postMessage"] + ["chat.update", "chat.postMessage"] * 2
        assert [c.body.get("reply_broadcast") for c in calls[2::2]] == [True, True]
        assert (
            calls[2].body["text"]
            == "Escalated to level 1 of policy repeat (repeat 1): paging oncall"
        )
        r.clock.advance(minutes=2)
        await r.ing.execute(ResolveIncident(inc, "bob", "fixed the disk"))
        await r.settle()
        r.clock.advance(hours=1)
        await r.settle()
        assert stub.at(stub.WEBHOOK) == []
        assert slack_calls(stub)[-2:] == ["chat.update", "chat.postMessage"]
        assert (
            stub.at(stub.SLACK_API)[-1].body["text"] == "Resolved: resolved by bob: fixed the disk"
        )
    finally:
        await r.stop()
    assert stub.problems() == []


async def test_deadline_due_while_stopped_fires_exactly_once_after_restart(
    rig: Rig, stub: ChatStub
) -> None:
    inc = await rig.fire()
    await rig.settle()
    [level1] = rig.ing.world.deadlines.about(inc)
    assert level1.due_at == T0 + timedelta(minutes=10)
    await rig.stop()

    rig.clock.advance(minutes=15)  # the daemon was down when level 1 came due
    await rig.start()  # the timer service fires overdue deadlines at start
    assert [e.originator_id for e in rig.events(DeadlineFired)].count(level1.id) == 1
    await rig.settle()
    assert len(stub.at(stub.TEAMS)) == 1
    assert len(stub.at(stub.WEBHOOK)) == 1

    for _ in range(2):  # further restarts and passes fire nothing again
        await rig.stop()
        await rig.start()
        await rig.settle()
        assert await rig.timers.fire_due() == []
    assert [e.originator_id for e in rig.events(DeadlineFired)].count(level1.id) == 1
    assert len(stub.at(stub.TEAMS)) == 1
    assert len(stub.at(stub.WEBHOOK)) == 1
    fired = [e.originator_id for e in rig.events(DeadlineFired)]
    assert len(fired) == len(set(fired)) == 2  # level 0 and level 1, once each


async def test_notification_log_prevents_resending_and_edits_the_first_message(
    rig: Rig, stub: ChatStub
) -> None:
    inc = await rig.fire()
    await rig.settle()
    assert slack_calls(stub) == ["chat.postMessage"]
    first_ts = next(iter(stub.slack_messages))
    opening = next(r for r in rig.log.read(0, 1000) if isinstance(r.event, DeadlineFired))
    await rig.stop()

    await rig.start()
    await rig.settle()
    assert slack_calls(stub) == ["chat.postMessage"]  # nothing re-sent after the restart
    assert rig.ing.world.notifications.thread(inc, "oncall").ref == {
        "channel": "C0ONCALL",
        "ts": first_ts,
    }

    # Handling the paging event again (as after a crash between sending and committing, when
    # the reaction's position was not recorded) sends nothing: the notification log has it.
    replay = NotifyReaction(
        rig.ing, build_notifiers(rig.config), rig.config, rig.clock, sleep=no_sleep
    )
    replay.name = "notify-replay"
    await replay.react(opening.id, opening.event)
    assert slack_calls(stub) == ["chat.postMessage"]

    await rig.ing.execute(Acknowledge(inc, "carol"))
    await rig.settle()
    assert slack_calls(stub) == ["chat.postMessage", "chat.update", "chat.postMessage"]
    assert stub.at(stub.SLACK_API)[1].body["ts"] == first_ts


async def test_storm_control_bounds_messages_and_summarizes_the_rest(
    tmp_path: Path, stub: ChatStub
) -> None:
    config = {
        "channels": channels(stub),
        "policies": [{"name": "all", "levels": [{"channels": ["pager", "hook"]}]}],
        "storm": {"max_messages": 3, "window": "1m"},
    }
    r = Rig(tmp_path / "s.db", stub, Clock(T0), config)
    await r.start()
    try:
        for i in range(10):
            await r.fire(name=f"Storm{i}")
        await r.settle()
        assert len(stub.at(stub.WEBHOOK)) == 3
        assert len(stub.at(stub.SLACK_HOOK)) == 3
        assert len(r.events(NotificationHeld)) == 14
        summaries = [e for e in r.events(DeadlineSet) if e.kind == "notify-summary"]
        assert sorted(str(e.payload["channel"]) for e in summaries) == ["hook", "pager"]
        assert all(e.due_at == T0 + timedelta(minutes=1) for e in summaries)

        r.clock.advance(minutes=1)
        await r.settle()
        hooks = stub.at(stub.WEBHOOK)
        assert len(hooks) == 4
        assert hooks[-1].body["event"] == "notifications_held"
        assert hooks[-1].body["held_total"] == 7
        assert {h["title"] for h in hooks[-1].body["held"]} == {f"Storm{i}" for i in range(3, 10)}
        slack_summary = stub.at(stub.SLACK_HOOK)[-1].body
        assert "7 notification(s) held back" in slack_summary["blocks"][0]["text"]["text"]
        assert r.ing.world.notifications.channel("pager").held_pending == 0
    finally:
        await r.stop()
    assert stub.problems() == []


async def test_a_failing_channel_is_recorded_and_blocks_nothing(
    tmp_path: Path, stub: ChatStub
) -> None:
    config = {
        "channels": channels(stub),
        "policies": [{"name": "p", "levels": [{"channels": ["hook", "pager"]}]}],
    }
    stub.always[stub.SLACK_HOOK] = Reply(403, b"action_prohibited")
    r = Rig(tmp_path / "f.db", stub, Clock(T0), config)
    await r.start()
    try:
        inc = await r.fire()
        await r.settle()
        [failed] = r.events(NotificationFailed)
        assert (failed.channel, failed.status, failed.platform_error) == (
            "hook",
            403,
            "action_prohibited",
        )
        assert len(stub.at(stub.SLACK_HOOK)) == 1  # a 4xx is final: no retries
        assert [h.body["event"] for h in stub.at(stub.WEBHOOK)] == ["incident_opened"]
        # Incident handling carries on: a person acknowledges, the working channel hears of it.
        await r.ing.execute(Acknowledge(inc, "dave"))
        await r.settle()
        assert [h.body["event"] for h in stub.at(stub.WEBHOOK)] == [
            "incident_opened",
            "acknowledged",
        ]
        assert len(stub.at(stub.SLACK_HOOK)) == 1
        log = r.ing.world.notifications.channel("hook")
        assert (log.failed, log.last_error) == (
            1,
            "not retried: Slack answered HTTP 403: action_prohibited (action_prohibited)",
        )
    finally:
        await r.stop()


async def test_a_page_whose_record_failed_to_commit_is_recorded_as_sent_not_sent_again(
    rig: Rig, stub: ChatStub
) -> None:
    """The store refuses the commit that records a page just delivered: the reactor handles
    the event again once the store answers, and the page is recorded, not re-sent (nor
    recorded as of unknown delivery: this process knows it arrived)."""
    submit = rig.ing.submit
    failed: list[int] = []

    async def flaky(commands: Any, tracking: Any = None) -> list[DomainEvent]:
        if any(isinstance(c, RecordSent) for c in commands) and not failed:
            failed.append(tracking.notification_id)
            raise StoreUnavailable("the store went away (test)")
        return await submit(commands, tracking=tracking)

    rig.ing.submit = flaky  # type: ignore[method-assign]
    await rig.fire()
    await rig.settle()
    assert failed, "the record's commit was never refused"
    assert slack_calls(stub) == ["chat.postMessage"]
    [sent] = rig.events(NotificationSent)
    assert sent.channel == "oncall"
    assert rig.events(NotificationFailed) == []
    assert len(rig.events(NotificationAttempted)) == 1


# --- the daemon as a process, real time -------------------------------------------------


def pages(stub: ChatStub) -> list[str]:
    """Escalation pages the webhook received (other follow-ups, e.g. the agent's, aside)."""
    events = [h.body["event"] for h in stub.at(stub.WEBHOOK)]
    return [e for e in events if e in ("incident_opened", "escalated")]


def test_daemon_stopped_across_a_deadline_fires_it_exactly_once_after_restart(
    tmp_path: Path, stub: ChatStub
) -> None:
    stub.always[stub.SLACK_HOOK] = Reply(404, b"channel_not_found")
    delay = 4
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path / 'wk' / 'events.db'}",
        settings={
            "notifications": {
                "channels": {
                    "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET},
                    "gone": {"type": "slack_webhook", "url": stub.url(stub.SLACK_HOOK)},
                },
                "policies": [
                    {
                        "name": "page",
                        "levels": [
                            {"channels": ["pager", "gone"]},
                            {"channels": ["pager"], "delay": f"{delay}s"},
                        ],
                    }
                ],
            }
        },
    )
    wk.start()
    try:
        r = httpx.post(
            f"{wk.url}/api/v2/alerts",
            json=[{"labels": {"alertname": "DiskFull", "severity": "critical"}}],
            timeout=30,
        )
        assert r.status_code == 200
        wait_for(lambda: pages(stub) == ["incident_opened"], timeout=30, what="the first page")
        wk.stop()
        stopped_at = time.monotonic()
        assert pages(stub) == ["incident_opened"], wk.log_tail()

        # Level 1 comes due while the daemon is down.
        time.sleep(max(0.0, delay + 1 - (time.monotonic() - stopped_at)))
        assert pages(stub) == ["incident_opened"]

        wk.start()
        wait_for(lambda: len(pages(stub)) >= 2, timeout=30, what="the level 1 page")
        wait_for(
            lambda: len([e for e in wk.events() if e["type"] == "DeadlineFired"]) >= 2,
            timeout=30,
            what="two DeadlineFired events",
        )
        time.sleep(1.5)  # a second firing would show up by now
        fired = [e for e in wk.events() if e["type"] == "DeadlineFired"]
        assert len(fired) == 2
        assert len({e["stream"] for e in fired}) == 2
        assert pages(stub) == ["incident_opened", "escalated"]

        # The stub counts a page when the request arrives, the daemon once the reply is back,
        # and follow-ups (such as the agent's) may still be on their way: compare the two
        # once they have settled.
        def pager_sent_line() -> str:
            sent = float(len(stub.at(stub.WEBHOOK)))  # pages, plus follow-ups
            return f'watchkeeper_notifications_total{{channel="pager",outcome="sent"}} {sent}'

        wait_for(
            lambda: pager_sent_line() in httpx.get(f"{wk.url}/metrics", timeout=30).text,
            timeout=30,
            what="the pager's sent count on /metrics to match what the pager received",
        )
        metrics = httpx.get(f"{wk.url}/metrics", timeout=30).text
        assert 'watchkeeper_notifications_total{channel="gone",outcome="failed"} 1.0' in metrics
        assert pager_sent_line() in metrics
        status = subprocess.run(
            [
                sys.executable,
                "-c",
                "from daemon.cli.main import main; main()",
                "--url",
                wk.url,
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "notify gone" in status
        assert "channel_not_found" in status
    finally:
        wk.stop()
    assert stub.problems() == []


def test_daemon_killed_after_the_receiver_got_a_page_never_sends_it_again(
    tmp_path: Path, stub: ChatStub
) -> None:
    """kill -9 at the worst moment: the webhook has the page, the daemon has no record of it.

    After the restart the page is recorded as delivery unknown (a status failure saying
    so), not sent a second time; the incident, still unacknowledged, is paged by the next
    escalation step.
    """
    delay = 2
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path / 'wk' / 'events.db'}",
        settings={
            "notifications": {
                "channels": {
                    "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET},
                },
                "policies": [
                    {
                        "name": "page",
                        "levels": [
                            {"channels": ["pager"]},
                            {"channels": ["pager"], "delay": f"{delay}s"},
                        ],
                    }
                ],
            }
        },
    )

    def kill_on_first_page(got: Any) -> None:
        if got.path == stub.WEBHOOK and got.body.get("event") == "incident_opened":
            stub.on_receive = None
            wk.kill()  # SIGKILL before the webhook answers: the daemon cannot record it

    wk.start()
    try:
        stub.on_receive = kill_on_first_page
        r = httpx.post(
            f"{wk.url}/api/v2/alerts",
            json=[{"labels": {"alertname": "DiskFull", "severity": "critical"}}],
            timeout=30,
        )
        assert r.status_code == 200
        assert wk.child is not None
        wait_for(lambda: not wk.child.running, timeout=30, what="the daemon to be killed")
        assert pages(stub) == ["incident_opened"]

        wk.start()

        def unknown() -> list[dict[str, Any]]:
            return [
                e
                for e in wk.events()
                if e["type"] == "NotificationFailed"
                and e["data"]["reason"].startswith("delivery unknown")
            ]

        wait_for(unknown, timeout=30, what="the page recorded as delivery unknown")
        [rec] = unknown()
        assert rec["data"]["channel"] == "pager"
        assert rec["data"]["kind"] == "opened"
        assert rec["data"]["reason"].startswith(
            "delivery unknown: a previous run may have sent it; not re-sent"
        )
        attempted = [e for e in wk.events() if e["type"] == "NotificationAttempted"]
        assert attempted[0]["data"]["key"] == rec["data"]["key"]
        # The safety net: still unacknowledged, the incident is paged by the next step.
        wait_for(lambda: len(pages(stub)) >= 2, timeout=30, what="the level 1 page")
        time.sleep(1.0)  # a repeat would show up by now
        assert pages(stub) == ["incident_opened", "escalated"], wk.log_tail()
        st = wk.get("/api/v1/status")
        pager = st["notifications"]["pager"]
        assert (pager["sent"], pager["failed"]) == (1, 1), pager
        assert pager["last_error"].startswith("delivery unknown"), pager
    finally:
        stub.on_receive = None
        wk.stop()
    assert stub.problems() == []


async def test_action_follow_ups_say_what_happened_in_the_thread(rig: Rig, stub: ChatStub) -> None:
    from daemon.domain.action_model import ActionPlan, DecidePolicy, RejectAction
    from daemon.domain.investigation_model import (
        ActionSpec,
        Budget,
        ProposeAction,
        StartInvestigation,
        investigation_id_for,
    )
    from daemon.domain.policy import PolicyRules

    inc = await rig.fire()
    await rig.settle()
    inv = investigation_id_for(inc, "disk", 1)
    spec = ActionSpec(id="rotate_logs", kind="systemd", risk="low", params_schema={})
    await rig.ing.submit(
        [StartInvestigation(inv, inc, 1, "disk", "1", "deterministic", "", "h", Budget(), (spec,))]
    )
    v = rig.ing.world.investigations.active[inv].version
    [proposed, *_] = await rig.ing.submit([ProposeAction(inv, v, "c1", "rotate_logs", {}, "full")])
    pid = proposed.proposal_id  # type: ignore[attr-defined]
    plan = ActionPlan(
        kind="systemd",
        action_id="rotate_logs",
        summary="systemctl start logrotate.service",
        targets=("logrotate.service",),
        spec={},
    )
    labels = {"instance": "web1"}
    await rig.ing.submit([DecidePolicy(pid, PolicyRules(), plan, labels=labels)])
    rig.clock.advance(minutes=1)
    await rig.ing.submit([RejectAction(pid, "bea", "approver", "api", "not now")])
    await rig.settle()
    bodies = [r.body for r in stub.at(stub.SLACK_API)]
    replies = [b["text"] for b in bodies if "thread_ts" in b]
    act = "rotate_logs on web1 (`systemctl start logrotate.service`)"
    assert replies == [
        "Agent proposed rotate_logs (systemd), risk low: full",
        f"Approval requested for {act}: needs 1 approval(s); 30m left (expires 12:30 UTC)",
        f"bea (approver) rejected {act} via api; it will not run: not now",
    ]
    updates = [b for b in bodies if "ts" in b]
    # Nobody acknowledged: the header still says Firing, and names the instance.
    assert {u["blocks"][0]["text"]["text"] for u in updates} == {
        "🔥 Firing: [CRITICAL] DiskFull on web1"
    }
    # No Slack app is configured here, so no message carries buttons nobody could answer.
    assert all(b["type"] != "actions" for body in bodies for b in body.get("blocks", []))


async def test_a_snoozed_incident_escalates_only_when_the_snooze_ends(
    rig: Rig, stub: ChatStub
) -> None:
    from daemon.domain.incident_work import SnoozeIncident

    inc = await rig.fire()
    await rig.settle()
    await rig.ing.submit([SnoozeIncident(inc, "alice", T0 + timedelta(minutes=15), "deploy")])
    rig.clock.advance(minutes=10)  # level 2 is due now, but the incident is snoozed
    await rig.settle()
    assert stub.at(stub.TEAMS) == []
    rig.clock.advance(minutes=4, seconds=59)
    await rig.settle()
    assert stub.at(stub.TEAMS) == []
    rig.clock.advance(seconds=1)
    await rig.settle()
    assert len(stub.at(stub.TEAMS)) == 1
    assert len(stub.at(stub.WEBHOOK)) == 1


async def test_an_unacknowledged_incident_escalates_again(rig: Rig, stub: ChatStub) -> None:
    from daemon.domain.incident_work import UnacknowledgeIncident

    inc = await rig.fire()
    await rig.settle()
    await rig.ing.submit([Acknowledge(inc, "alice")])
    await rig.settle()
    rig.clock.advance(minutes=15)
    await rig.settle()
    assert stub.at(stub.TEAMS) == []  # acknowledged: the chain stopped
    await rig.ing.submit([UnacknowledgeIncident(inc, "alice", "end of shift")])
    await rig.settle()
    replies = [r.body["text"] for r in stub.at(stub.SLACK_API) if "thread_ts" in r.body]
    assert "Unacknowledged by alice: end of shift" in replies
    rig.clock.advance(minutes=10)
    await rig.settle()
    assert len(stub.at(stub.TEAMS)) == 1  # nobody has it: level 2 is paged again
