"""Local HTTP servers standing in for Slack, Mattermost, Teams and a webhook receiver.

Each endpoint checks the body against the shape its platform documents and answers the
way that platform does, including its refusals: Slack's `invalid_blocks`, Mattermost's
JSON error, Teams' 400. Tests can script answers (5xx, 429 with Retry-After, 4xx) per path.

Documented shapes checked here:
- Slack Block Kit (docs.slack.dev, Block Kit reference): at most 50 blocks; header text is
  plain_text of at most 150 chars; section text at most 3000, at most 10 fields of at most
  2000; context at most 10 elements; actions at most 25 buttons whose text is plain_text of
  at most 75, action_id at most 255 and unique, value at most 2000, style primary|danger.
- Slack Web API: `Authorization: Bearer`, `chat.postMessage` needs `channel`; `chat.update`
  needs `channel` and the `ts` of a message posted earlier; thread replies need a known
  `thread_ts`. Answers `{"ok": true, "channel", "ts"}` or `{"ok": false, "error"}`.
- Mattermost incoming webhook: `text` and/or `attachments`; an attachment needs
  `fallback`; `color` is a hex colour; fields are `{title, value, short}`; a post holds at
  most 16383 characters.
- Teams Workflows webhook: `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard>}]}`; the card has
  `type: AdaptiveCard`, a `version` and a `body` of known elements; at most 28 KB.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_EVENTS = {
    "incident_opened",
    "acknowledged",
    "unacknowledged",
    "escalated",
    "action_proposed",
    "approval_requested",
    "action_executed",
    "action_failed",
    "resolved",
    "investigation_concluded",
    "investigation_escalated",
    "action_approved",
    "action_rejected",
    "approval_expired",
    "action_cancelled",
    "action_verified",
    "action_rolled_back",
    "notifications_held",
    "situation_changed",
}
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")


# --- validators: each returns the problems it found ---------------------------------------


def _text_object(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected a text object"]
    problems = []
    allowed = {"type", "text", "emoji", "verbatim"}
    if set(obj) - allowed:
        problems.append(f"{where}: unexpected keys {sorted(set(obj) - allowed)}")
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        problems.append(f"{where}.type: must be one of {kinds}")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        problems.append(f"{where}.text: must be a non-empty string")
    elif len(text) > limit:
        problems.append(f"{where}.text: {len(text)} chars, more than {limit}")
    if "emoji" in obj and obj.get("type") != "plain_text":
        problems.append(f"{where}.emoji: only allowed on plain_text")
    return problems


_BLOCK_KEYS = {
    "header": {"type", "text", "block_id"},
    "section": {"type", "text", "fields", "block_id", "accessory"},
    "context": {"type", "elements", "block_id"},
    "actions": {"type", "elements", "block_id"},
    "divider": {"type", "block_id"},
}


def validate_blocks(blocks: Any) -> list[str]:
    """Problems with a Block Kit `blocks` array."""
    if not isinstance(blocks, list) or not blocks:
        return ["blocks: expected a non-empty array"]
    problems = []
    if len(blocks) > 50:
        problems.append(f"blocks: {len(blocks)} blocks, more than 50")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, b in enumerate(blocks):
        where = f"blocks[{i}]"
        kind = b.get("type") if isinstance(b, dict) else None
        if kind not in _BLOCK_KEYS:
            problems.append(f"{where}.type: unsupported block type {kind!r}")
            continue
        if set(b) - _BLOCK_KEYS[kind]:
            problems.append(f"{where}: unexpected keys {sorted(set(b) - _BLOCK_KEYS[kind])}")
        if "block_id" in b:
            bid = b["block_id"]
            if not isinstance(bid, str) or len(bid) > 255 or bid in block_ids:
                problems.append(f"{where}.block_id: must be a unique string of at most 255")
            block_ids.add(str(bid))
        if kind == "header":
            problems += _text_object(b.get("text"), f"{where}.text", 150, plain_only=True)
        elif kind == "section":
            if "text" not in b and "fields" not in b:
                problems.append(f"{where}: needs text or fields")
            if "text" in b:
                problems += _text_object(b["text"], f"{where}.text", 3000)
            if "fields" in b:
                fields = b["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}.fields: 1 to 10 items")
                else:
                    for j, f in enumerate(fields):
                        problems += _text_object(f, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            els = b.get("elements")
            if not isinstance(els, list) or not 1 <= len(els) <= 10:
                problems.append(f"{where}.elements: 1 to 10 items")
            else:
                for j, e in enumerate(els):
                    problems += _text_object(e, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            els = b.get("elements")
            if not isinstance(els, list) or not 1 <= len(els) <= 25:
                problems.append(f"{where}.elements: 1 to 25 items")
                continue
            for j, e in enumerate(els):
                w = f"{where}.elements[{j}]"
                allowed = {"type", "text", "action_id", "value", "style", "url", "confirm"}
                if not isinstance(e, dict) or e.get("type") != "button":
                    problems.append(f"{w}: only buttons are used here")
                    continue
                if set(e) - allowed:
                    problems.append(f"{w}: unexpected keys {sorted(set(e) - allowed)}")
                problems += _text_object(e.get("text"), f"{w}.text", 75, plain_only=True)
                aid = e.get("action_id")
                if not isinstance(aid, str) or not aid or len(aid) > 255 or aid in action_ids:
                    problems.append(f"{w}.action_id: must be a unique string of at most 255")
                action_ids.add(str(aid))
                if "value" in e and (not isinstance(e["value"], str) or len(e["value"]) > 2000):
                    problems.append(f"{w}.value: a string of at most 2000")
                if "style" in e and e["style"] not in ("primary", "danger"):
                    problems.append(f"{w}.style: primary or danger")
    return problems


def validate_slack_message(body: Any) -> list[str]:
    """A Slack message body (incoming webhook or chat.postMessage/chat.update)."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = []
    text = body.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text: a non-empty fallback text is required with blocks")
    elif len(text) > 40000:
        problems.append("text: more than 40000 chars")
    if "blocks" in body:
        problems += validate_blocks(body["blocks"])
    return problems


def validate_mattermost(body: Any) -> list[str]:
    """A Mattermost incoming-webhook body with Slack-compatible attachments."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = []
    allowed = {
        "text",
        "username",
        "icon_url",
        "icon_emoji",
        "channel",
        "attachments",
        "props",
        "type",
    }
    if set(body) - allowed:
        problems.append(f"body: unexpected keys {sorted(set(body) - allowed)}")
    if not body.get("text") and not body.get("attachments"):
        problems.append("body: needs text or attachments")
    total = len(str(body.get("text", "")))
    for i, a in enumerate(body.get("attachments") or []):
        where = f"attachments[{i}]"
        keys = {
            "fallback",
            "color",
            "pretext",
            "text",
            "author_name",
            "author_link",
            "author_icon",
            "title",
            "title_link",
            "fields",
            "image_url",
            "thumb_url",
            "footer",
            "footer_icon",
        }
        if not isinstance(a, dict):
            problems.append(f"{where}: expected an object")
            continue
        if set(a) - keys:
            problems.append(f"{where}: unexpected keys {sorted(set(a) - keys)}")
        if not isinstance(a.get("fallback"), str) or not a["fallback"]:
            problems.append(f"{where}.fallback: required")
        if "color" in a and not _HEX.match(str(a["color"])):
            problems.append(f"{where}.color: expected #RRGGBB")
        for j, f in enumerate(a.get("fields") or []):
            if (
                not isinstance(f, dict)
                or not isinstance(f.get("title"), str)
                or not isinstance(f.get("value"), str)
                or not isinstance(f.get("short", False), bool)
            ):
                problems.append(f"{where}.fields[{j}]: expected {{title, value, short}}")
        total += len(str(a.get("text", ""))) + len(str(a.get("pretext", "")))
    if total > 16383:
        problems.append(f"post: {total} chars, more than 16383")
    return problems


_CARD_ELEMENTS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {}


def _textblock(e: dict[str, Any], where: str) -> list[str]:
    problems = []
    if not isinstance(e.get("text"), str) or not e["text"]:
        problems.append(f"{where}.text: required")
    enums = {
        "weight": {"Default", "Lighter", "Bolder"},
        "size": {"Default", "Small", "Medium", "Large", "ExtraLarge"},
        "color": {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"},
    }
    for k, ok in enums.items():
        if k in e and e[k] not in ok:
            problems.append(f"{where}.{k}: {e[k]!r} not one of {sorted(ok)}")
    for k in ("wrap", "isSubtle"):
        if k in e and not isinstance(e[k], bool):
            problems.append(f"{where}.{k}: boolean")
    return problems


def _factset(e: dict[str, Any], where: str) -> list[str]:
    facts = e.get("facts")
    if not isinstance(facts, list) or not facts:
        return [f"{where}.facts: non-empty array required"]
    return [
        f"{where}.facts[{i}]: expected {{title, value}} strings"
        for i, f in enumerate(facts)
        if not (
            isinstance(f, dict)
            and isinstance(f.get("title"), str)
            and isinstance(f.get("value"), str)
        )
    ]


_CARD_ELEMENTS.update({"TextBlock": _textblock, "FactSet": _factset})


def validate_teams(body: Any, raw_size: int) -> list[str]:
    """A Teams Workflows webhook body carrying one Adaptive Card."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = []
    if raw_size > 28 * 1024:
        problems.append(f"body: {raw_size} bytes, more than 28 KB")
    if body.get("type") != "message":
        problems.append('type: must be "message"')
    atts = body.get("attachments")
    if not isinstance(atts, list) or not atts:
        return [*problems, "attachments: non-empty array required"]
    for i, a in enumerate(atts):
        where = f"attachments[{i}]"
        if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append(f"{where}.contentType: must be application/vnd.microsoft.card.adaptive")
        card = a.get("content")
        if not isinstance(card, dict):
            problems.append(f"{where}.content: the Adaptive Card object is required")
            continue
        if card.get("type") != "AdaptiveCard":
            problems.append(f'{where}.content.type: must be "AdaptiveCard"')
        if card.get("version") not in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"):
            problems.append(f"{where}.content.version: a supported card version is required")
        if card.get("$schema") != "http://adaptivecards.io/schemas/adaptive-card.json":
            problems.append(f"{where}.content.$schema: the Adaptive Card schema URL is expected")
        body_ = card.get("body")
        if not isinstance(body_, list) or not body_:
            problems.append(f"{where}.content.body: non-empty array required")
            continue
        for j, e in enumerate(body_):
            check = _CARD_ELEMENTS.get(e.get("type") if isinstance(e, dict) else None)  # type: ignore[arg-type]
            if check is None:
                problems.append(f"{where}.content.body[{j}].type: unknown element")
            else:
                problems += check(e, f"{where}.content.body[{j}]")
        for j, act in enumerate(card.get("actions") or []):
            if act.get("type") != "Action.OpenUrl" or not act.get("url") or not act.get("title"):
                problems.append(f"{where}.content.actions[{j}]: Action.OpenUrl with title and url")
    return problems


def validate_webhook(body: Any, headers: dict[str, str], secret: str, raw: bytes) -> list[str]:
    """watchkeeper's generic webhook envelope (README, "Generic webhook")."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = []
    if body.get("version") != "1":
        problems.append('version: "1" expected')
    if body.get("event") not in WEBHOOK_EVENTS:
        problems.append(f"event: {body.get('event')!r} is not a documented event type")
    if headers.get("x-watchkeeper-event") != body.get("event"):
        problems.append("X-Watchkeeper-Event header does not match event")
    for key in ("delivery_id", "sent_at", "headline"):
        if key not in body:
            problems.append(f"{key}: required")
    if body.get("event") != "notifications_held" and not isinstance(body.get("incident"), dict):
        problems.append("incident: object required")
    if secret:
        ts = headers.get("x-watchkeeper-timestamp", "")
        mac = hmac.new(secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("x-watchkeeper-signature", ""), "sha256=" + mac):
            problems.append("X-Watchkeeper-Signature: does not verify")
    return problems


# --- the server ----------------------------------------------------------------------------


@dataclass
class Received:
    """One request the stub received."""

    path: str
    headers: dict[str, str]
    body: Any
    problems: list[str]
    at: float = field(default_factory=time.monotonic)
    peer: int = 0  # the client's port: one per TCP connection


@dataclass
class Reply:
    """A scripted answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ChatStub:
    """All platform stubs on one loopback port; paths select the platform."""

    SLACK_HOOK = "/slack/hook"
    SLACK_API = "/slack/api"
    SLACK_RESPONSE = "/slack/response"
    MATTERMOST = "/mattermost/hook"
    TEAMS = "/teams/flow"
    WEBHOOK = "/webhook"

    def __init__(
        self,
        *,
        slack_token: str = "xoxb-test-token",
        webhook_secret: str = "",
        keep_alive: bool = False,
    ) -> None:
        self.slack_token = slack_token
        self.webhook_secret = webhook_secret
        self.received: list[Received] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.always: dict[str, Reply] = {}
        self.slack_messages: dict[str, dict[str, Any]] = {}
        # Called with each request once it is counted, before it is answered (e.g. to kill
        # the sender at the worst moment: the message arrived, the sender never learns it).
        self.on_receive: Callable[[Received], None] | None = None
        self._ts = 1_700_000_000_000100
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections open, so tests can see whether a client reuses one.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="chatstub", daemon=True
        )

    def __enter__(self) -> ChatStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        """Full URL of a stub path."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with these replies, then normally."""
        self.scripts.setdefault(path, deque()).extend(replies)

    def at(self, path: str) -> list[Received]:
        """Requests received on a path (prefix match for the Slack API)."""
        with self._lock:
            return [r for r in self.received if r.path == path or r.path.startswith(path + "/")]

    def problems(self) -> list[tuple[str, list[str]]]:
        """Every request whose payload did not match its platform's documented shape."""
        with self._lock:
            return [(r.path, r.problems) for r in self.received if r.problems]

    def wait(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until `count` requests reached `path`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise TimeoutError(
            f"{path}: {len(self.at(path))} requests after {timeout}s, wanted {count}"
        )

    async def arrived(self, path: str, count: int, patience: float = 20.0) -> list[Received]:
        """Like `wait`, for async tests: the event loop keeps running meanwhile."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise TimeoutError(
            f"{path}: {len(self.at(path))} requests after {patience}s, wanted {count}"
        )

    # --- request handling ---------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = h.path
        problems, reply = self._answer(path, body, headers, raw)
        with self._lock:
            got = Received(path, headers, body, problems, peer=h.client_address[1])
            self.received.append(got)
            script = self.scripts.get(path)
            if script:
                reply = script.popleft()
            elif path in self.always:
                reply = self.always[path]
        if self.on_receive is not None:
            self.on_receive(got)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            h.send_response(reply.status)
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(reply.body)))
            h.end_headers()
            h.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (a timeout test)

    def _answer(
        self, path: str, body: Any, headers: dict[str, str], raw: bytes
    ) -> tuple[list[str], Reply]:
        if path == self.SLACK_HOOK:
            problems = validate_slack_message(body)
            return problems, (Reply(400, b"invalid_blocks") if problems else Reply(200, b"ok"))
        if path.startswith(self.SLACK_API + "/"):
            return self._slack_api(path.rsplit("/", 1)[1], body, headers)
        if path == self.MATTERMOST:
            problems = validate_mattermost(body)
            err = json.dumps(
                {
                    "id": "web.incoming_webhook.parse.app_error",
                    "message": "; ".join(problems),
                    "status_code": 400,
                }
            )
            return problems, (Reply(400, err.encode()) if problems else Reply(200, b"ok"))
        if path == self.TEAMS:
            problems = validate_teams(body, len(raw))
            err = json.dumps(
                {"error": {"code": "InvalidRequestContent", "message": "; ".join(problems)}}
            )
            return problems, (Reply(400, err.encode()) if problems else Reply(202))
        if path == self.WEBHOOK:
            problems = validate_webhook(body, headers, self.webhook_secret, raw)
            return problems, (Reply(400, b"bad envelope") if problems else Reply(200, b"{}"))
        if path == self.SLACK_RESPONSE:
            ok = isinstance(body, dict) and isinstance(body.get("text"), str)
            return ([] if ok else ["response_url: expected {text}"]), Reply(200, b"ok")
        return [f"no such stub path {path}"], Reply(404, b"not found")

    def _slack_api(
        self, method: str, body: Any, headers: dict[str, str]
    ) -> tuple[list[str], Reply]:
        def answer(data: dict[str, Any]) -> Reply:
            return Reply(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

        if headers.get("authorization") != f"Bearer {self.slack_token}":
            return ["Authorization: wrong or missing bot token"], answer(
                {"ok": False, "error": "invalid_auth"}
            )
        if not isinstance(body, dict) or not body.get("channel"):
            return ["channel: required"], answer({"ok": False, "error": "channel_not_found"})
        problems = (
            validate_slack_message(body)
            if "blocks" in body
            else ([] if isinstance(body.get("text"), str) and body["text"] else ["text: required"])
        )
        if problems:
            return problems, answer({"ok": False, "error": "invalid_blocks", "errors": problems})
        with self._lock:
            if method == "chat.postMessage":
                thread = body.get("thread_ts")
                if thread is not None and thread not in self.slack_messages:
                    return ["thread_ts: unknown message"], answer(
                        {"ok": False, "error": "thread_not_found"}
                    )
                self._ts += 100
                ts = f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"
                self.slack_messages[ts] = body
                return [], answer(
                    {
                        "ok": True,
                        "channel": body["channel"],
                        "ts": ts,
                        "message": {"text": body["text"]},
                    }
                )
            if method == "chat.update":
                ts = body.get("ts")
                if ts not in self.slack_messages:
                    return ["ts: no such message"], answer(
                        {"ok": False, "error": "message_not_found"}
                    )
                self.slack_messages[ts] = body
                return [], answer(
                    {"ok": True, "channel": body["channel"], "ts": ts, "text": body["text"]}
                )
        return [f"unsupported method {method}"], answer({"ok": False, "error": "unknown_method"})
