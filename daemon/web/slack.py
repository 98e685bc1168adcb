"""`POST /api/v1/slack/interactions`: the Acknowledge, Approve and Reject buttons in Slack.

Every request is checked against Slack's signature (`X-Slack-Signature`: `v0=` HMAC-SHA256
of `v0:<timestamp>:<body>` with the app's signing secret) and refused when its
`X-Slack-Request-Timestamp` is more than five minutes from now, or when its signature was
seen within those five minutes, so a captured request cannot be replayed. Replies go only
to a `response_url` on `notifications.slack_app.response_hosts`. The Slack user must be
mapped to a watchkeeper identity and role in `notifications.slack_app.users`; anyone else
is refused and told why in Slack.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, urlparse
from uuid import UUID

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.config.auth import Identity, is_loopback
from daemon.config.secrets import resolve_secret
from daemon.domain import Acknowledge, Rejected

if TYPE_CHECKING:
    from daemon.web.context import ApiContext

log = logging.getLogger("watchkeeper.slack")
REPLAY_WINDOW_SECONDS = 5 * 60
ACTIONS = {"ack": "responder", "approve": "approver", "reject": "approver"}
# Signatures seen within the replay window; more than this many and the oldest go.
SEEN_MAX = 10_000


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str


class _Button(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str = ""
    value: str = ""


class _Interaction(BaseModel):
    """The part of a block_actions payload watchkeeper reads; any other shape is a 400."""

    model_config = ConfigDict(extra="ignore")
    user: _User
    actions: list[_Button] = Field(min_length=1)
    response_url: str = ""


class SeenSignatures:
    """Signatures received within the replay window (bounded by SEEN_MAX)."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def replayed(self, signature: str, now: float) -> bool:
        """Whether this signature was seen within the window (remembered if it was not)."""
        for old in [k for k, t in self._at.items() if t < now - REPLAY_WINDOW_SECONDS]:
            del self._at[old]
        if signature in self._at:
            return True
        if len(self._at) >= SEEN_MAX:
            del self._at[next(iter(self._at))]
        self._at[signature] = now
        return False


def reply_allowed(url: str, hosts: list[str]) -> bool:
    """Whether a reply may go to `url`: https to a listed host (http only to loopback)."""
    try:
        parts = urlparse(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(host)):
        return False
    return any(fnmatch.fnmatchcase(host, h.lower()) for h in hosts)


class ApprovalDecider(Protocol):
    """Where the Approve and Reject buttons go once the actions stage exists.

    `proposal` is the proposal id carried by the button; the decider records the decision
    (or refuses it) and returns a sentence for the person who pressed the button.
    """

    async def __call__(
        self, *, incident_id: UUID | None, proposal: str, approve: bool, by: Identity
    ) -> str:
        """Approve or reject one proposed action; raise `Rejected` to refuse."""
        ...


def signature_problem(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float
) -> str | None:
    """Why a request is not a genuine, fresh Slack request, or None if it is."""
    problem = header_problem(timestamp, signature, now)
    if problem or not timestamp or not signature:
        return problem
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "X-Slack-Signature does not match the signing secret"
    return None


def header_problem(timestamp: str | None, signature: str | None, now: float) -> str | None:
    """What is wrong with the signature headers alone (checked before the body is read)."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature header"
    try:
        ts = int(timestamp)
    except ValueError:
        return "X-Slack-Request-Timestamp is not a Unix time"
    if abs(now - ts) > REPLAY_WINDOW_SECONDS:
        return "request timestamp is more than 5 minutes from now (possible replay); refused"
    return None


def _action(action_id: str) -> str:
    # Buttons are named wk_<action>_<index> (see handlers/notifiers/slack.py).
    parts = action_id.split("_")
    return parts[1] if len(parts) >= 2 and parts[0] == "wk" else ""


class Interactions:
    """Slack's interactivity endpoint for one daemon, and the replies it is still sending."""

    def __init__(self, ctx: ApiContext, approvals: ApprovalDecider | None = None) -> None:
        self.ctx = ctx
        self.approvals = approvals
        self.replies: set[asyncio.Task[None]] = set()
        self.seen = SeenSignatures()

    def tell(self, response_url: str, text: str) -> None:
        """Answer the person in Slack (ephemeral), without holding up our 3-second reply."""
        hosts = self.ctx.settings.notifications.slack_app.response_hosts
        if not reply_allowed(response_url, hosts):
            log.info("slack reply not sent: response_url host not in response_hosts")
            return
        task = asyncio.create_task(_post_reply(response_url, text), name="slack-reply")
        self.replies.add(task)
        task.add_done_callback(self.replies.discard)

    def refuse(self, status: int, reason: str, response_url: str = "") -> JSONResponse:
        """Refuse with the reason, told to the person in Slack too when we know where."""
        log.info("slack interaction refused status=%d reason=%s", status, reason)
        if response_url:
            self.tell(response_url, reason)
        return JSONResponse({"error": reason}, status_code=status)

    async def interactions(self, request: Request) -> JSONResponse:
        """A button pressed in Slack: check the signature and the person, then act."""
        ctx, approvals = self.ctx, self.approvals
        app_cfg = ctx.settings.notifications.slack_app
        if not app_cfg.signing_secret:
            return self.refuse(
                404,
                "Slack interactivity is not configured (notifications.slack_app.signing_secret)",
            )
        # Headers first: a request that cannot be genuine is refused before its body is read.
        problem = header_problem(
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            ctx.clock().timestamp(),
        )
        if problem:
            return self.refuse(401, problem)
        body = await request.body()
        problem = signature_problem(
            resolve_secret(app_cfg.signing_secret),
            body,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            ctx.clock().timestamp(),
        )
        if problem:
            return self.refuse(401, problem)
        if self.seen.replayed(
            request.headers.get("x-slack-signature", ""), ctx.clock().timestamp()
        ):
            return self.refuse(401, "this signed request was received already (replay); refused")
        try:
            payload = _Interaction.model_validate_json(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, ValueError, ValidationError, UnicodeDecodeError):
            return self.refuse(
                400, "expected a form field `payload` holding a block_actions JSON document"
            )
        user_id, action, response_url = payload.user.id, payload.actions[0], payload.response_url
        user = app_cfg.users.get(user_id)
        if user is None:
            return self.refuse(
                403,
                f"Slack user {user_id} is not mapped to a watchkeeper identity; ask an admin to "
                "add it under notifications.slack_app.users",
                response_url,
            )
        ident = Identity(user.name, user.role, channel="slack")
        kind = _action(action.action_id)
        if kind not in ACTIONS:
            return self.refuse(400, f"unknown action {action.action_id[:100]!r}", response_url)
        if not ident.can(ACTIONS[kind]):
            return self.refuse(
                403,
                f"{ident.name} has role {ident.role}; {kind} needs role {ACTIONS[kind]} or higher",
                response_url,
            )
        value = action.value
        try:
            if kind == "ack":
                text = await _acknowledge(ctx, value, ident)
            else:
                if approvals is None:
                    return self.refuse(
                        501,
                        "approving actions from Slack is not available: this watchkeeper has no "
                        "approval workflow connected",
                        response_url,
                    )
                ref = json.loads(value)
                if not isinstance(ref, dict):
                    raise TypeError("button value is not an object")
                text = await approvals(
                    incident_id=UUID(ref["incident"]) if ref.get("incident") else None,
                    proposal=str(ref["proposal"]),
                    approve=kind == "approve",
                    by=ident,
                )
        except Rejected as e:
            return self.refuse(e.status, e.reason, response_url)
        except (ValueError, KeyError, TypeError):
            return self.refuse(
                400, f"button value {value[:100]!r} is not one watchkeeper sent", response_url
            )
        log.info("slack interaction action=%s by=%s slack_user=%s", kind, ident.name, user_id)
        self.tell(response_url, text)
        return JSONResponse({"ok": True, "result": text})


def slack_router(ctx: ApiContext, approvals: ApprovalDecider | None = None) -> APIRouter:
    """The interactions endpoint, bound to a running daemon."""
    router = APIRouter()
    endpoint = Interactions(ctx, approvals).interactions
    router.add_api_route("/api/v1/slack/interactions", endpoint, methods=["POST"])
    return router


async def _acknowledge(ctx: ApiContext, value: str, ident: Identity) -> str:
    incident_id = UUID(value)
    await ctx.ingestor.execute(Acknowledge(incident_id, ident.name, "via Slack"))
    inc = ctx.ingestor.world.incidents.get(incident_id)
    return f"Acknowledged {inc.title if inc else incident_id} as {ident.name}."


async def _post_reply(url: str, text: str) -> None:
    body = {"response_type": "ephemeral", "replace_original": False, "text": text}
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            await client.post(url, json=body)
    except httpx.HTTPError as e:
        log.warning("could not answer in Slack: %s", type(e).__name__)
