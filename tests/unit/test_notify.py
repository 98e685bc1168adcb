"""The notify pipeline: its pure decisions as tables, and each notifier against a stub that
validates the payload shape its platform documents, including retries and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from chatstubs import ChatStub, Reply, validate_blocks, validate_mattermost, validate_teams

from daemon.domain import Alert, ReceiveAlert, World, decide, fingerprint
from daemon.domain.commands import Command
from daemon.domain.notification_model import (
    ChannelLog,
    IncidentThread,
    PendingAttempt,
    RecordFailed,
    channel_stream,
    dedup_verdict,
    storm_verdict,
    window_frees_at,
)
from daemon.domain.state import Incident
from daemon.notify.content import (
    digest,
    incident_message,
    summary_message,
    truncate,
)
from daemon.notify.pipeline import (
    ChatNotifier,
    Dedup,
    Deliver,
    Message,
    MessageRef,
    Notice,
    Pipeline,
    Proposal,
    RetryPolicy,
    SendError,
    StormControl,
    notification_status,
    retry_delay,
)
from handlers.notifiers.mattermost import MattermostWebhook
from handlers.notifiers.slack import SlackBot, SlackWebhook, blocks
from handlers.notifiers.teams import TeamsWorkflow
from handlers.notifiers.webhook import JsonWebhook

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "hmac-secret"


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with ChatStub(webhook_secret=SECRET) as s:
        yield s


def world_with_incident(description: str = "disk is filling up") -> tuple[World, Incident]:
    w = World()
    labels = {"alertname": "DiskFull", "severity": "critical", "instance": "web1", "cluster": "eu"}
    alert = Alert(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={"summary": "/var is 95% full", "description": description},
        starts_at=T0,
        ends_at=T0 + timedelta(hours=1),
    )
    decide(w, ReceiveAlert(alert), T0)
    return w, next(iter(w.incidents.values()))


def notice(
    channel: str, w: World, inc: Incident, kind: str = "opened", key: str = "esc:1:0:0"
) -> Notice:
    msg = incident_message(
        w, inc, kind, T0 + timedelta(minutes=7), console_url="https://wk.example"
    )
    return Notice(channel=channel, message=msg, key=key, digest=digest(msg))


class RecordingSleep:
    """Stands in for asyncio.sleep: records the waits, passes no time."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --- pure decisions as tables ------------------------------------------------------------

THREAD = IncidentThread(
    incident_id=uuid4(),
    channel="c",
    platform="slack",
    ref={"ts": "1.2"},
    digest="d1",
    keys=("esc:1:0:0",),
    first_sent_at=T0,
    last_sent_at=T0,
)


@pytest.mark.parametrize(
    ("thread", "key", "dig", "needs_thread", "go", "reason"),
    [
        (None, "esc:1:0:0", "d1", False, True, "first message for this incident on this channel"),
        (
            None,
            "acknowledged:3",
            "d2",
            True,
            False,
            "channel has no message for this incident to follow up",
        ),
        (
            THREAD,
            "esc:1:0:0",
            "d9",
            False,
            False,
            "already sent esc:1:0:0 at 2026-03-01T12:00:00+00:00",
        ),
        (THREAD, "esc:1:1:0", "d1", False, True, "esc:1:1:0 not sent before"),
        (
            THREAD,
            "acknowledged:3",
            "d1",
            True,
            False,
            "the channel's message already shows this state",
        ),
        (THREAD, "acknowledged:3", "d2", True, True, "acknowledged:3 not sent before"),
    ],
)
def test_dedup_table(thread, key, dig, needs_thread, go, reason) -> None:
    v = dedup_verdict(thread, key, dig, needs_thread=needs_thread)
    assert (v.go, v.reason, v.unknown) == (go, reason, False)


def test_an_attempt_without_outcome_is_never_sent_again() -> None:
    attempt = PendingAttempt(incident_id=THREAD.incident_id, kind="escalated", at=T0)
    for thread in (None, THREAD):
        v = dedup_verdict(thread, "esc:1:1:0", "d2", needs_thread=False, attempted=attempt)
        assert (v.go, v.unknown) == (False, True)
        assert v.reason == (
            "delivery unknown: a previous run may have sent it; not re-sent "
            "(attempted at 2026-03-01T12:00:00+00:00)"
        )
    # Recorded as sent after all (the attempt is then settled): a plain skip.
    v = dedup_verdict(THREAD, "esc:1:0:0", "d2", needs_thread=False, attempted=attempt)
    assert (v.go, v.unknown) == (False, False)


def _log(*ages_s: int) -> ChannelLog:
    return ChannelLog(
        stream_id=channel_stream("c"), recent=[T0 - timedelta(seconds=a) for a in ages_s]
    )


@pytest.mark.parametrize(
    ("recent", "limit", "go", "reason"),
    [
        ((), 3, True, "0 of 3 messages used in the last 5m"),
        ((30, 20, 10), 3, False, "storm control: 3 messages already sent in the last 5m"),
        ((400, 20, 10), 3, True, "2 of 3 messages used in the last 5m"),
        ((299, 200, 100, 1), 3, False, "storm control: 3 messages already sent in the last 5m"),
        ((301, 300, 10), 3, True, "1 of 3 messages used in the last 5m"),
    ],
)
def test_storm_table(recent, limit, go, reason) -> None:
    v = storm_verdict(_log(*recent), T0, limit, timedelta(minutes=5))
    assert (v.go, v.reason) == (go, reason)


def test_window_frees_when_the_oldest_counted_message_leaves_it() -> None:
    log = _log(100, 50, 10)
    assert window_frees_at(log, 3, timedelta(minutes=5)) == T0 - timedelta(seconds=100) + timedelta(
        minutes=5
    )
    assert window_frees_at(log, 4, timedelta(minutes=5)) is None


POLICY = RetryPolicy(attempts=4, backoff=1.0, max_backoff=30.0)


@pytest.mark.parametrize(
    ("err", "attempt", "rand", "wait", "reason"),
    [
        (
            SendError("Slack answered HTTP 404: channel_not_found", recoverable=False, status=404),
            1,
            0.5,
            None,
            "not retried: Slack answered HTTP 404: channel_not_found",
        ),
        (
            SendError("HTTP 503", recoverable=True, status=503),
            4,
            0.5,
            None,
            "gave up after 4 attempts: HTTP 503",
        ),
        (
            SendError("HTTP 503", recoverable=True, status=503),
            1,
            0.0,
            0.5,
            "retry 2/4 in 0.50s after: HTTP 503",
        ),
        (
            SendError("HTTP 503", recoverable=True, status=503),
            1,
            1.0,
            1.0,
            "retry 2/4 in 1.00s after: HTTP 503",
        ),
        (
            SendError("HTTP 503", recoverable=True, status=503),
            3,
            0.0,
            2.0,
            "retry 4/4 in 2.00s after: HTTP 503",
        ),
        (
            SendError("HTTP 429", recoverable=True, status=429, retry_after=7),
            1,
            0.9,
            7.0,
            "retry 2/4 in 7s as the platform asked",
        ),
        (
            SendError("HTTP 429", recoverable=True, status=429, retry_after=120),
            1,
            0.9,
            None,
            "gave up: platform asked to wait 120s, more than retry.max_backoff (30s)",
        ),
    ],
)
def test_retry_table(err, attempt, rand, wait, reason) -> None:
    assert retry_delay(err, attempt, POLICY, lambda: rand) == (wait, reason)


def test_backoff_is_capped_and_jittered_within_half_to_full() -> None:
    err = SendError("timeout", recoverable=True)
    policy = RetryPolicy(attempts=10, backoff=1.0, max_backoff=8.0)
    waits = [retry_delay(err, a, policy, lambda: 1.0)[0] for a in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [retry_delay(err, a, policy, lambda: 0.0)[0] for a in (1, 5)] == [0.5, 4.0]


def test_truncate_marks_the_cut() -> None:
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("abcdefghijkl", 6) == "abcde…"
    assert len(truncate("x" * 5000, 3000)) == 3000


# --- payloads each platform accepts ----------------------------------------------------------


def test_message_content_has_what_on_call_needs() -> None:
    w, inc = world_with_incident()
    msg = incident_message(
        w, inc, "opened", T0 + timedelta(minutes=7), console_url="https://wk.example/"
    )
    assert msg.headline == "🔥 Firing: [CRITICAL] DiskFull on web1"
    assert msg.summary == "/var is 95% full\ndisk is filling up"
    facts = dict(msg.facts)
    assert facts["Firing for"] == "7m"
    assert facts["Severity"] == "critical"
    assert msg.labels["instance"] == "web1"
    assert msg.url == f"https://wk.example/incidents/{inc.id}"
    assert [b.action for b in msg.buttons] == ["ack"]


def test_agent_findings_are_shown_when_the_world_has_them() -> None:
    w, inc = world_with_incident()

    class Ref:
        proposal_id = uuid4()
        action_id = "restart-service"
        kind = "systemd_restart"
        risk = "low"
        params = {"unit": "nginx"}
        rationale = "nginx workers are stuck"

    class Run:
        incident_id = inc.id
        summary = "nginx stopped serving"
        probable_cause = "worker deadlock after reload"
        proposals = (Ref(),)

    class Investigations:
        def for_incident(self, incident_id):
            return [Run()] if incident_id == inc.id else []

    class WorldWithFindings:
        investigations = Investigations()

        def __getattr__(self, name):
            return getattr(w, name)

    msg = incident_message(WorldWithFindings(), inc, "opened", T0)  # type: ignore[arg-type]
    assert msg.probable_cause == "worker deadlock after reload"
    assert msg.agent_summary == "nginx stopped serving"
    assert msg.proposals == (
        Proposal(
            action_id=str(Ref.proposal_id),
            kind="restart-service",
            runs="systemd_restart(unit=nginx)",
            risk="low",
            status="proposed",
            rationale="nginx workers are stuck",
        ),
    )
    text = json.dumps(blocks(msg))
    assert "worker deadlock after reload" in text
    assert "systemd_restart(unit=nginx)" in text


async def test_every_platform_accepts_its_payload_even_for_huge_text(stub: ChatStub) -> None:
    # 20 kB of annotation text: each notifier must cut it to its platform's limits.
    w, inc = world_with_incident(description="x" * 20_000)
    targets: list[ChatNotifier] = [
        SlackWebhook("sw", stub.url(stub.SLACK_HOOK), 5),
        SlackBot("sb", "xoxb-test-token", "C0ONCALL", stub.url(stub.SLACK_API), 5),
        MattermostWebhook("mm", stub.url(stub.MATTERMOST), 5, username="watchkeeper"),
        TeamsWorkflow("tm", stub.url(stub.TEAMS), 5),
        JsonWebhook("wh", stub.url(stub.WEBHOOK), 5, secret=SECRET),
    ]
    msg = notice("x", w, inc).message
    refs = [await t.deliver(msg, None) for t in targets]
    assert stub.problems() == []
    assert len(stub.received) == 5
    assert refs[1]["channel"] == "C0ONCALL"
    assert refs[1]["ts"]
    hdr = stub.at(stub.SLACK_HOOK)[0].body["blocks"][0]
    assert hdr["type"] == "header"
    assert hdr["text"]["text"] == msg.headline
    section = stub.at(stub.SLACK_HOOK)[0].body["blocks"][1]["text"]["text"]
    assert len(section) == 3000
    assert section.endswith("…")
    card = stub.at(stub.TEAMS)[0].body["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == msg.headline
    hook = stub.at(stub.WEBHOOK)[0]
    assert hook.body["event"] == "incident_opened"
    assert hook.body["incident"]["id"] == str(inc.id)
    assert hook.headers["x-watchkeeper-signature"].startswith("sha256=")


async def test_slack_bot_edits_in_place_and_replies_in_thread(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    bot = SlackBot("sb", "xoxb-test-token", "C0ONCALL", stub.url(stub.SLACK_API), 5)
    ref = await bot.deliver(notice("sb", w, inc).message, None)
    decide_ack = incident_message(w, inc, "acknowledged", T0, note="Acknowledged by alice")
    again = await bot.deliver(decide_ack, ref)
    assert again == ref
    calls = [r.path.rsplit("/", 1)[1] for r in stub.at(stub.SLACK_API)]
    assert calls == ["chat.postMessage", "chat.update", "chat.postMessage"]
    update, reply = stub.at(stub.SLACK_API)[1].body, stub.at(stub.SLACK_API)[2].body
    assert update["ts"] == ref["ts"]
    assert update["channel"] == "C0ONCALL"
    assert reply["thread_ts"] == ref["ts"]
    assert reply["text"] == "Acknowledged by alice"
    assert stub.problems() == []


def test_validators_catch_what_the_platforms_refuse() -> None:
    assert validate_blocks([{"type": "header", "text": {"type": "mrkdwn", "text": "x" * 151}}]) == [
        "blocks[0].text.type: must be one of ('plain_text',)",
        "blocks[0].text.text: 151 chars, more than 150",
    ]
    assert validate_blocks(
        [
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "a"},
                        "action_id": "x",
                    },
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "b"},
                        "action_id": "x",
                        "style": "blue",
                    },
                ],
            }
        ]
    ) == [
        "blocks[0].elements[1].action_id: must be a unique string of at most 255",
        "blocks[0].elements[1].style: primary or danger",
    ]
    assert validate_mattermost({"attachments": [{"color": "red"}]}) == [
        "attachments[0].fallback: required",
        "attachments[0].color: expected #RRGGBB",
    ]
    assert validate_teams(
        {"type": "message", "attachments": [{"contentType": "text/html", "content": {}}]}, 10
    )[0] == ("attachments[0].contentType: must be application/vnd.microsoft.card.adaptive")


# --- retries and failures through the pipeline --------------------------------------------------


def pipeline_for(
    notifiers: dict[str, ChatNotifier], w: World, sleep: RecordingSleep, limit: int = 20
) -> Pipeline:
    return Pipeline(
        [
            Dedup(lambda: w),
            StormControl(lambda: w, lambda: T0, notifiers, limit, timedelta(minutes=5)),
        ],
        Deliver(
            notifiers,
            RetryPolicy(attempts=4, backoff=1.0, max_backoff=30.0),
            sleep=sleep,
            rand=lambda: 0.0,
        ),
    )


async def test_5xx_is_retried_with_backoff_then_delivered(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    stub.script(stub.SLACK_HOOK, Reply(503, b"service unavailable"), Reply(500, b"rollup_error"))
    sleep = RecordingSleep()
    notifiers: dict[str, ChatNotifier] = {"sw": SlackWebhook("sw", stub.url(stub.SLACK_HOOK), 5)}
    out = await pipeline_for(notifiers, w, sleep).run(notice("sw", w, inc))
    assert (out.status, out.attempts, out.reason) == ("sent", 3, "delivered on attempt 3")
    assert sleep.waits == [0.5, 1.0]
    assert len(stub.at(stub.SLACK_HOOK)) == 3


async def test_429_waits_as_long_as_retry_after_says(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    stub.script(stub.TEAMS, Reply(429, b"", {"Retry-After": "7"}))
    sleep = RecordingSleep()
    notifiers: dict[str, ChatNotifier] = {"tm": TeamsWorkflow("tm", stub.url(stub.TEAMS), 5)}
    out = await pipeline_for(notifiers, w, sleep).run(notice("tm", w, inc))
    assert out.status == "sent"
    assert out.attempts == 2
    assert sleep.waits == [7.0]


async def test_slack_api_ratelimit_answer_is_retried(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
    stub.script(stub.SLACK_API + "/chat.postMessage", Reply(429, body, {"Retry-After": "3"}))
    sleep = RecordingSleep()
    notifiers: dict[str, ChatNotifier] = {
        "sb": SlackBot("sb", "xoxb-test-token", "C1", stub.url(stub.SLACK_API), 5)
    }
    out = await pipeline_for(notifiers, w, sleep).run(notice("sb", w, inc))
    assert out.status == "sent"
    assert sleep.waits == [3.0]
    assert out.ref["ts"]


async def test_4xx_is_not_retried_and_is_recorded_with_the_platform_error(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    stub.script(stub.SLACK_HOOK, Reply(404, b"channel_not_found"))
    sleep = RecordingSleep()
    notifiers: dict[str, ChatNotifier] = {"sw": SlackWebhook("sw", stub.url(stub.SLACK_HOOK), 5)}
    out = await pipeline_for(notifiers, w, sleep).run(notice("sw", w, inc))
    assert (out.status, out.attempts, out.http_status, out.platform_error) == (
        "failed",
        1,
        404,
        "channel_not_found",
    )
    assert out.reason == "not retried: Slack answered HTTP 404: channel_not_found"
    assert sleep.waits == []
    cmd = out.command()
    assert cmd is not None
    decide(w, cmd, T0)
    status = notification_status(w)["sw"]
    assert (status["sent"], status["failed"]) == (0, 1)
    assert (
        status["last_error"]
        == "not retried: Slack answered HTTP 404: channel_not_found (channel_not_found)"
    )


async def test_slack_api_refusal_keeps_slacks_error_code(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    notifiers: dict[str, ChatNotifier] = {
        "sb": SlackBot("sb", "wrong-token", "C1", stub.url(stub.SLACK_API), 5)
    }
    out = await pipeline_for(notifiers, w, RecordingSleep()).run(notice("sb", w, inc))
    assert (out.status, out.platform_error, out.attempts) == ("failed", "invalid_auth", 1)


async def test_a_platform_that_does_not_answer_times_out_and_is_retried(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    stub.script(stub.MATTERMOST, Reply(200, b"ok", delay=2.0))
    sleep = RecordingSleep()
    notifiers: dict[str, ChatNotifier] = {
        "mm": MattermostWebhook("mm", stub.url(stub.MATTERMOST), 0.3)
    }
    out = await pipeline_for(notifiers, w, sleep).run(notice("mm", w, inc))
    assert out.status == "sent"
    assert out.attempts == 2
    assert sleep.waits == [0.5]


async def test_unreachable_platform_gives_up_after_the_configured_attempts() -> None:
    w, inc = world_with_incident()
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    notifiers: dict[str, ChatNotifier] = {"wh": JsonWebhook("wh", "http://127.0.0.1:9/hook", 2)}
    sleep = RecordingSleep()
    out = await pipeline_for(notifiers, w, sleep).run(notice("wh", w, inc))
    assert out.status == "failed"
    assert out.attempts == 4
    assert len(sleep.waits) == 3
    assert out.reason == "gave up after 4 attempts: cannot reach webhook: ConnectError"


class DiesAfterSending:
    """A notifier whose daemon is killed right after the platform took the message."""

    def __init__(self, inner: ChatNotifier) -> None:
        self.inner, self.name, self.platform = inner, inner.name, inner.platform
        self.can_update = inner.can_update

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        await self.inner.deliver(message, previous)
        raise KilledHere


class KilledHere(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


async def test_a_message_whose_sender_died_is_recorded_unknown_never_resent(
    stub: ChatStub,
) -> None:
    w, inc = world_with_incident()
    hook = JsonWebhook("hook", stub.url(stub.WEBHOOK), 5, secret=SECRET)
    attempts: list[list[Command]] = []

    async def commit(cmds: Sequence[Command]) -> None:  # the ingestor, in one commit
        attempts.append(list(cmds))
        for c in cmds:
            decide(w, c, T0)

    def pipeline(n: ChatNotifier) -> Pipeline:
        p = pipeline_for({"hook": n}, w, RecordingSleep())
        p.record_attempts = commit
        return p

    with pytest.raises(KilledHere):
        await pipeline(DiesAfterSending(hook)).run_all([notice("hook", w, inc)])
    assert len(stub.at(stub.WEBHOOK)) == 1
    assert [type(c).__name__ for c in attempts[0]] == ["RecordAttempt"]
    # The next run (a restart, or the next leader) handles the same event again.
    [out] = await pipeline(hook).run_all([notice("hook", w, inc)])
    assert out.status == "unknown"
    assert out.reason.startswith("delivery unknown: a previous run may have sent it; not re-sent")
    cmd = out.command()
    assert isinstance(cmd, RecordFailed)
    decide(w, cmd, T0)
    assert len(stub.at(stub.WEBHOOK)) == 1  # not sent again
    assert len(attempts) == 1  # nothing more was attempted
    log = w.notifications.channel("hook")
    assert (log.failed, log.attempted) == (1, {})
    assert log.last_error.startswith("delivery unknown")
    assert w.notifications.thread(inc.id, "hook") is None
    # The next escalation step is a message of its own: it pages.
    [nxt] = await pipeline(hook).run_all([notice("hook", w, inc, "escalated", "esc:1:1:0")])
    assert nxt.status == "sent"
    assert len(stub.at(stub.WEBHOOK)) == 2


async def test_an_edit_in_place_is_not_recorded_as_an_attempt(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    bot = SlackBot("sb", "xoxb-test-token", "C1", stub.url(stub.SLACK_API), 5)
    attempts: list[Command] = []

    async def commit(cmds: Sequence[Command]) -> None:
        attempts.extend(cmds)
        for c in cmds:
            decide(w, c, T0)

    p = pipeline_for({"sb": bot}, w, RecordingSleep())
    p.record_attempts = commit
    [first] = await p.run_all([notice("sb", w, inc)])
    assert first.status == "sent"
    sent = first.command()
    assert sent is not None
    decide(w, sent, T0)
    assert w.notifications.channel("sb").attempted == {}
    thread = w.notifications.thread(inc.id, "sb")
    update = replace(notice("sb", w, inc, "acknowledged", "acknowledged:2"), thread=thread)
    [edit] = await p.run_all([update])
    assert (edit.status, edit.new_message) == ("sent", False)
    assert [type(c).__name__ for c in attempts] == ["RecordAttempt"]  # the first only


async def test_dedup_and_storm_control_stop_before_sending(stub: ChatStub) -> None:
    w, inc = world_with_incident()
    notifiers: dict[str, ChatNotifier] = {"sw": SlackWebhook("sw", stub.url(stub.SLACK_HOOK), 5)}
    p = pipeline_for(notifiers, w, RecordingSleep(), limit=1)
    first = await p.run(notice("sw", w, inc))
    cmd = first.command()
    assert first.status == "sent"
    assert cmd is not None
    decide(w, cmd, T0)
    thread = w.notifications.thread(inc.id, "sw")
    replay = await p.run(
        Notice("sw", first.notice.message, first.notice.key, first.notice.digest, thread)
    )
    assert (replay.status, replay.command()) == ("skipped", None)
    second = await p.run(notice("sw", w, inc, key="esc:1:1:0"))
    assert (second.status, second.reason) == (
        "held",
        "storm control: 1 messages already sent in the last 5m",
    )
    held_cmd = second.command()
    assert held_cmd is not None
    decide(w, held_cmd, T0)
    log = w.notifications.channel("sw")
    assert (log.held_pending, [h.title for h in log.held_back]) == (1, ["DiskFull"])
    summary = summary_message("sw", log.held_back, log.held_pending, "5m")
    assert validate_blocks(blocks(summary)) == []
    assert len(stub.at(stub.SLACK_HOOK)) == 1


def test_a_proposal_in_chat_says_which_host_it_runs_on() -> None:
    from daemon.domain.action_model import ActionPlan

    w, inc = world_with_incident()
    pid = uuid4()

    class Ref:
        proposal_id = pid
        action_id = "restart-service"
        kind = "systemd"
        risk = "low"
        params = {"unit": "nginx.service"}
        rationale = "nginx is down on web-3"

    class Run:
        incident_id = inc.id
        summary = ""
        probable_cause = ""
        proposals = (Ref(),)

    class Investigations:
        def for_incident(self, incident_id: object) -> list[Run]:
            return [Run()]

    class Entry:
        status = "pending_approval"
        target = "web-3"
        plan = ActionPlan(
            kind="systemd", action_id="restart-service", summary="systemctl restart nginx.service",
            targets=("nginx.service",), spec={}, host="web-3", transport="ssh",
        )

    class Book:
        def get(self, key: object) -> Entry | None:
            return Entry() if key == pid else None

    class WorldWithAction:
        investigations = Investigations()
        actions = Book()

        def __getattr__(self, name: str) -> object:
            return getattr(w, name)

    msg = incident_message(WorldWithAction(), inc, "opened", T0)  # type: ignore[arg-type]
    assert msg.proposals[0].runs == "systemctl restart nginx.service on web-3"
    assert "systemctl restart nginx.service on web-3" in json.dumps(blocks(msg))
