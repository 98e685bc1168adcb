"""Slack buttons: signed requests act, everything else is refused with the reason.

The API runs in-process over a real Ingestor and event log; Slack's `response_url` points
at a local stub, so the refused person's explanation is checked where Slack would show it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import pytest
from chatstubs import ChatStub
from fastapi import FastAPI

from daemon.config.auth import Authenticator, Identity
from daemon.config.settings import Settings
from daemon.domain import Alert, GroupingPolicy, ReceiveAlert, Rejected, fingerprint
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import EventLog
from daemon.web.app import create_app
from daemon.web.context import ApiContext
from daemon.web.slack import reply_allowed, signature_problem, slack_router

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USERS = {
    "U0ALICE": {"name": "alice", "role": "responder"},
    "U0VIEW": {"name": "victor", "role": "viewer"},
    "U0BOSS": {"name": "bea", "role": "approver"},
}


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with ChatStub() as s:
        yield s


class Daemon:
    """The API around a real Ingestor; `clock` is what the replay window is measured from."""

    def __init__(self, ing: Ingestor, settings: Settings) -> None:
        self.ing = ing
        self.now = T0
        self.ctx = ApiContext(
            settings, ing, lambda: self.now, Metrics(), Authenticator(settings), dict
        )

    def client(self, app: FastAPI | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(
            app=app or create_app(self.ctx), client=("127.0.0.1", 50000)
        )
        return httpx.AsyncClient(transport=transport, base_url="http://wk")


@pytest.fixture
async def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("TEST_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'e.db'}",
        notifications={
            "slack_app": {
                "signing_secret": "env:TEST_SLACK_SIGNING_SECRET",
                "users": USERS,
                # Replies go to the local stub standing in for hooks.slack.com.
                "response_hosts": ["127.0.0.1"],
            }
        },
    )
    log = EventLog(settings.store)
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    await ing.start()
    yield Daemon(ing, settings)
    await ing.close()
    log.close()


async def open_incident(d: Daemon) -> UUID:
    labels = {"alertname": "DiskFull", "severity": "critical"}
    alert = Alert(
        fingerprint=fingerprint(labels),
        labels=labels,
        starts_at=T0,
        ends_at=T0 + timedelta(hours=1),
    )
    await d.ing.submit([ReceiveAlert(alert)])
    return next(iter(d.ing.world.incidents))


def payload(user: str, action_id: str, value: str, response_url: str) -> dict[str, Any]:
    """A block_actions payload as Slack sends it (trimmed to what matters)."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "example"},
        "api_app_id": "A0APP",
        "container": {
            "type": "message",
            "message_ts": "1700000000.000200",
            "channel_id": "C0ONCALL",
        },
        "channel": {"id": "C0ONCALL", "name": "oncall"},
        "trigger_id": "123.456.abc",
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "block_id": "watchkeeper_actions",
                "action_id": action_id,
                "value": value,
                "action_ts": "1700000001.000300",
                "text": {"type": "plain_text", "text": "Acknowledge"},
            }
        ],
    }


def signed(body: bytes, at: datetime, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(at.timestamp()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(p: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(p)}).encode()


async def post(
    d: Daemon, body: bytes, headers: dict[str, str], app: FastAPI | None = None
) -> httpx.Response:
    async with d.client(app) as c:
        return await c.post("/api/v1/slack/interactions", content=body, headers=headers)


async def test_a_correctly_signed_ack_acknowledges_the_incident(
    daemon: Daemon, stub: ChatStub
) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0ALICE", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "result": "Acknowledged DiskFull as alice."}
    state = daemon.ing.world.incidents[inc]
    assert (state.state, state.acknowledged_by) == ("acknowledged", "alice")
    [reply] = await stub.arrived(stub.SLACK_RESPONSE, 1)
    assert reply.body == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": "Acknowledged DiskFull as alice.",
    }


async def test_a_second_ack_is_refused_with_who_took_it(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    for _ in range(2):
        body = form(payload("U0ALICE", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
        r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 409
    assert r.json() == {"error": "incident already acknowledged by alice"}


async def test_a_bad_signature_is_refused(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0ALICE", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0, secret="not-the-secret"))
    assert r.status_code == 401
    assert r.json() == {"error": "X-Slack-Signature does not match the signing secret"}
    tampered = body.replace(b"U0ALICE", b"U0BOSS_")
    r = await post(daemon, tampered, signed(body, T0))
    assert r.status_code == 401
    assert daemon.ing.world.incidents[inc].state == "open"
    assert stub.at(stub.SLACK_RESPONSE) == []  # an unverified request gets no answer in Slack


async def test_an_old_timestamp_is_refused_even_when_signed(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0ALICE", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0 - timedelta(minutes=5, seconds=1)))
    assert r.status_code == 401
    assert r.json() == {
        "error": "request timestamp is more than 5 minutes from now (possible replay); refused"
    }
    r = await post(daemon, body, signed(body, T0 - timedelta(minutes=4, seconds=59)))
    assert r.status_code == 200
    assert daemon.ing.world.incidents[inc].state == "acknowledged"


async def test_missing_headers_are_refused(daemon: Daemon) -> None:
    r = await post(daemon, b"payload=%7B%7D", {})
    assert r.status_code == 401
    assert r.json()["error"] == "missing X-Slack-Request-Timestamp or X-Slack-Signature header"


async def test_an_unmapped_user_is_refused_and_told_why(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0MALLORY", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    why = (
        "Slack user U0MALLORY is not mapped to a watchkeeper identity; ask an admin to add it "
        "under notifications.slack_app.users"
    )
    assert r.status_code == 403
    assert r.json() == {"error": why}
    assert daemon.ing.world.incidents[inc].state == "open"
    [reply] = await stub.arrived(stub.SLACK_RESPONSE, 1)
    assert reply.body["text"] == why
    assert reply.body["response_type"] == "ephemeral"


async def test_a_mapped_user_without_the_role_is_refused(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0VIEW", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 403
    assert r.json() == {"error": "victor has role viewer; ack needs role responder or higher"}
    [reply] = await stub.arrived(stub.SLACK_RESPONSE, 1)
    assert reply.body["text"] == r.json()["error"]


async def pending_action(d: Daemon, inc: UUID) -> UUID:
    """A proposed restart waiting for approval, recorded through the real domain."""
    from daemon.domain.action_model import ActionPlan, DecidePolicy
    from daemon.domain.investigation_model import (
        ActionSpec,
        Budget,
        ProposeAction,
        StartInvestigation,
        investigation_id_for,
    )
    from daemon.domain.policy import PolicyRules

    inv = investigation_id_for(inc, "disk-filling", 1)
    spec = ActionSpec(id="rotate_logs", kind="systemd", risk="low", params_schema={})
    await d.ing.submit(
        [
            StartInvestigation(
                inv, inc, 1, "disk-filling", "4", "deterministic", "", "h", Budget(), (spec,)
            )
        ]
    )
    v = d.ing.world.investigations.active[inv].version
    [proposed, _] = await d.ing.submit([ProposeAction(inv, v, "c1", "rotate_logs", {}, "full")])
    pid: UUID = proposed.proposal_id  # type: ignore[attr-defined]
    plan = ActionPlan(
        kind="systemd",
        action_id="rotate_logs",
        summary="systemctl start logrotate.service",
        targets=("logrotate.service",),
        spec={"unit": "logrotate.service", "operation": "start"},
    )
    await d.ing.submit([DecidePolicy(pid, PolicyRules(), plan)])
    return pid


async def test_a_signed_approve_click_approves_the_pending_action(
    daemon: Daemon, stub: ChatStub
) -> None:
    inc = await open_incident(daemon)
    pid = await pending_action(daemon, inc)
    value = json.dumps({"incident": str(inc), "proposal": str(pid)})
    body = form(payload("U0BOSS", "wk_approve_1", value, stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 200, r.text
    said = (
        "Approved systemctl start logrotate.service as bea; "
        "it runs after a final check of the world."
    )
    assert r.json() == {"ok": True, "result": said}
    entry = daemon.ing.world.actions.get(pid)
    assert entry is not None
    assert entry.status == "approved"
    [approval] = entry.approvals
    assert (approval.by, approval.role, approval.channel) == ("bea", "approver", "slack")
    [reply] = await stub.arrived(stub.SLACK_RESPONSE, 1)
    assert reply.body["text"] == said
    # The same click again is refused, told in Slack, and audited.
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 409
    assert r.json()["error"] == "already approved by bea; it is waiting to run"
    assert entry.approvals == daemon.ing.world.actions.get(pid).approvals  # type: ignore[union-attr]
    refusals = daemon.ing.world.actions.get(pid).refusals  # type: ignore[union-attr]
    assert refusals[-1].endswith(
        "bea (approver, slack) approve: already approved by bea; it is waiting to run"
    )


async def test_an_unknown_proposal_is_refused_and_audited(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    unknown = "5b0c3f7e-0000-4000-8000-000000000001"
    value = json.dumps({"incident": str(inc), "proposal": unknown})
    body = form(payload("U0BOSS", "wk_approve_1", value, stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    assert (r.status_code, r.json()) == (404, {"error": f"no action {unknown}"})
    rows = daemon.ing.log.read(0, 1000)
    refused = [rec.event for rec in rows if type(rec.event).__name__ == "ActionRequestRefused"]
    assert [(e.by, e.channel, e.reason) for e in refused] == [  # type: ignore[attr-defined]
        ("bea", "slack", f"no action {unknown}")
    ]


async def test_approve_and_reject_reach_the_connected_decider_with_the_identity(
    daemon: Daemon, stub: ChatStub
) -> None:
    inc = await open_incident(daemon)
    decisions: list[tuple[UUID | None, str, bool, Identity]] = []

    async def decider(
        *, incident_id: UUID | None, proposal: str, approve: bool, by: Identity
    ) -> str:
        if proposal == "expired":
            raise Rejected("approval window closed 2m ago", 409)
        decisions.append((incident_id, proposal, approve, by))
        return f"{'approved' if approve else 'rejected'} {proposal}"

    app = FastAPI()
    app.include_router(slack_router(daemon.ctx, decider))
    for action_id, proposal in (
        ("wk_approve_1", "p-1"),
        ("wk_reject_2", "p-1"),
        ("wk_approve_1", "expired"),
    ):
        value = json.dumps({"incident": str(inc), "proposal": proposal})
        body = form(payload("U0BOSS", action_id, value, stub.url(stub.SLACK_RESPONSE)))
        r = await post(daemon, body, signed(body, T0), app)
    assert decisions == [
        (inc, "p-1", True, Identity("bea", "approver", "slack")),
        (inc, "p-1", False, Identity("bea", "approver", "slack")),
    ]
    assert (r.status_code, r.json()) == (409, {"error": "approval window closed 2m ago"})
    # A responder may acknowledge but not approve.
    body = form(
        payload(
            "U0ALICE", "wk_approve_1", json.dumps({"incident": str(inc), "proposal": "p-1"}), ""
        )
    )
    r = await post(daemon, body, signed(body, T0), app)
    assert (r.status_code, r.json()["error"]) == (
        403,
        "alice has role responder; approve needs role approver or higher",
    )


@pytest.mark.parametrize(
    ("timestamp", "signature", "problem"),
    [
        (None, "v0=ab", "missing X-Slack-Request-Timestamp or X-Slack-Signature header"),
        ("soon", "v0=ab", "X-Slack-Request-Timestamp is not a Unix time"),
        (
            "999",
            "v0=ab",
            "request timestamp is more than 5 minutes from now (possible replay); refused",
        ),
        (
            "1601",
            "v0=ab",
            "request timestamp is more than 5 minutes from now (possible replay); refused",
        ),
        ("1299", "v0=ab", "X-Slack-Signature does not match the signing secret"),
        # Exactly five minutes old is still inside the window.
        ("1000", "v0=ab", "X-Slack-Signature does not match the signing secret"),
    ],
)
def test_signature_table(timestamp: str | None, signature: str, problem: str) -> None:
    assert signature_problem("s", b"body", timestamp, signature, now=1300.0) == problem


def test_slacks_documented_example_verifies() -> None:
    # The worked example in Slack's "Verifying requests from Slack" guide.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature_problem(SIGNING_SECRET, body, "1531420618", sig, now=1531420618 + 10) is None


# --- Slack: shapes, replays, replies -------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        [],
        {"user": {"id": "U0ALICE"}, "actions": ["wk_ack_0"]},
        {"user": {"id": "U0ALICE"}, "actions": []},
        {"user": "U0ALICE", "actions": [{"action_id": "wk_ack_0"}]},
        {"user": {"id": 7}, "actions": [{"action_id": "wk_ack_0"}]},
        {"user": {"id": "U0ALICE"}, "actions": [{"action_id": ["wk_ack_0"]}]},
        {"user": {"id": "U0BOSS"}, "actions": [{"action_id": "wk_approve_0", "value": "[1]"}]},
        {"user": {"id": "U0BOSS"}, "actions": [{"action_id": "wk_approve_0", "value": "{}"}]},
    ],
)
async def test_signed_slack_payloads_of_the_wrong_shape_get_400(daemon: Daemon, shape: Any) -> None:
    async def decider(**_: Any) -> str:
        return "decided"

    app = FastAPI()
    app.include_router(slack_router(daemon.ctx, decider))
    body = form(shape)
    r = await post(daemon, body, signed(body, T0), app)
    assert r.status_code == 400, r.text


async def test_a_signed_slack_request_is_accepted_once(daemon: Daemon, stub: ChatStub) -> None:
    inc = await open_incident(daemon)
    body = form(payload("U0ALICE", "wk_ack_0", str(inc), stub.url(stub.SLACK_RESPONSE)))
    app = create_app(daemon.ctx)
    first = await post(daemon, body, signed(body, T0), app)
    assert first.status_code == 200, first.text
    daemon.now = T0 + timedelta(minutes=2)  # still inside the 5-minute window
    again = await post(daemon, body, signed(body, T0), app)
    assert again.status_code == 401
    assert "replay" in again.json()["error"]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.slack.com/actions/T1/2/x", True),
        ("http://hooks.slack.com/actions/T1/2/x", False),
        ("https://hooks.slack.com.evil.example/x", False),
        ("https://evil.example/x", False),
        ("https://user:pw@hooks.slack.com/x", False),
        ("http://127.0.0.1:9/x", False),  # loopback, but not listed
    ],
)
def test_slack_replies_go_only_to_slack(url: str, ok: bool) -> None:
    assert reply_allowed(url, ["hooks.slack.com"]) is ok


async def test_a_reply_to_a_foreign_response_url_is_not_sent(
    daemon: Daemon, stub: ChatStub
) -> None:
    # The stub is on 127.0.0.1; a payload naming it by another loopback name is not listed.
    foreign = stub.url(stub.SLACK_RESPONSE).replace("127.0.0.1", "localhost")
    body = form(payload("U0NOBODY", "wk_ack_0", "x", foreign))
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 403
    await asyncio.sleep(0.5)
    assert stub.at(stub.SLACK_RESPONSE) == []
    # The same request naming the listed host is answered there (the test's control).
    body = form(payload("U0NOBODY", "wk_ack_0", "x", stub.url(stub.SLACK_RESPONSE)))
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 403
    await stub.arrived(stub.SLACK_RESPONSE, 1)


async def _posted_buttons(d: Daemon, stub: ChatStub, inc: UUID) -> dict[str, dict[str, Any]]:
    """Send the incident's message through the Slack bot; the buttons Slack received, by kind."""
    from daemon.notify.content import incident_message
    from handlers.notifiers.slack import SlackBot

    world = d.ing.world
    msg = incident_message(world, world.incidents[inc], "action_proposed", T0)
    bot = SlackBot("oncall", "xoxb-test-token", "C0ONCALL", stub.url(stub.SLACK_API), 5)
    await bot.deliver(msg, None)
    assert stub.problems() == []
    [posted] = stub.at(stub.SLACK_API)
    [actions] = [b for b in posted.body["blocks"] if b["type"] == "actions"]
    return {el["action_id"].split("_")[1]: el for el in actions["elements"]}


@pytest.mark.parametrize(("button", "status"), [("approve", "approved"), ("reject", "rejected")])
async def test_a_pending_action_renders_buttons_that_work_when_pressed(
    daemon: Daemon, stub: ChatStub, button: str, status: str
) -> None:
    inc = await open_incident(daemon)
    pid = await pending_action(daemon, inc)
    assert daemon.ing.world.actions.get(pid).status == "pending_approval"  # type: ignore[union-attr]
    buttons = await _posted_buttons(daemon, stub, inc)
    assert set(buttons) == {"ack", "approve", "reject"}
    assert buttons["approve"]["text"]["text"] == "Approve rotate_logs"
    assert buttons["reject"]["style"] == "danger"
    # Pressing the button Slack rendered: its action_id and value come back signed.
    pressed = buttons[button]
    body = form(
        payload("U0BOSS", pressed["action_id"], pressed["value"], stub.url(stub.SLACK_RESPONSE))
    )
    r = await post(daemon, body, signed(body, T0))
    assert r.status_code == 200, r.text
    entry = daemon.ing.world.actions.get(pid)
    assert entry is not None
    assert entry.status == status
    if button == "approve":
        assert [(a.by, a.channel) for a in entry.approvals] == [("bea", "slack")]
    else:
        assert (entry.decided_by, entry.approvals) == ("bea", ())
