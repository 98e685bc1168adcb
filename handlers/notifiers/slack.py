"""Slack: Block Kit messages through an incoming webhook, or the bot API with in-place edits.

The bot API posts one message per incident (`chat.postMessage`), edits it as the incident
changes (`chat.update`) and adds a thread reply saying what changed. Incoming webhooks can
only post, so every update is a new message there.
"""

from __future__ import annotations

from typing import Any

from daemon.notify import markup
from daemon.notify.content import truncate
from daemon.notify.markup import escaped
from daemon.notify.pipeline import Message, MessageRef, SendError
from handlers.notifiers.http import Connection, post, refusal

# Block Kit limits (docs.slack.dev, Block Kit reference).
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
CONTEXT_ELEMENTS_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
ACTIONS_MAX = 25
BLOCKS_MAX = 50
TEXT_MAX = 3000  # top-level fallback text; Slack truncates past 40,000, notifications use less
PROPOSALS_SHOWN = 5
# chat.* errors worth retrying; every other `ok: false` error is final.
RECOVERABLE_ERRORS = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}


def _mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def blocks(message: Message) -> list[dict[str, Any]]:
    """The message as Block Kit blocks, within Slack's limits."""
    headline = message.headline  # plain_text: shown as is, never parsed for links or pings
    message = escaped(message, "slack")
    out: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(headline, HEADER_MAX),
                "emoji": True,
            },
        }
    ]
    if message.summary:
        out.append({"type": "section", "text": _mrkdwn(message.summary)})
    if message.facts:
        out.append(
            {
                "type": "section",
                "fields": [
                    _mrkdwn(f"*{k}*\n{v}", FIELD_MAX) for k, v in message.facts[:FIELDS_MAX]
                ],
            }
        )
    findings = []
    if message.probable_cause:
        findings.append(f"*Probable cause:* {message.probable_cause}")
    if message.agent_summary:
        findings.append(f"*Agent summary:* {message.agent_summary}")
    if findings:
        out.append({"type": "section", "text": _mrkdwn("\n".join(findings))})
    for p in message.proposals[:PROPOSALS_SHOWN]:
        text = f"*Proposed action:* `{p.runs or p.kind}`" + (f" (risk {p.risk})" if p.risk else "")
        if p.rationale:
            text += f"\n{p.rationale}"
        out.append({"type": "section", "text": _mrkdwn(text)})
    if message.held:
        lines = [
            f"• {h.title} ({h.kind})" + (f" <{h.url}|open>" if h.url else "") for h in message.held
        ]
        more = message.held_total - len(message.held)
        listing = truncate("\n".join(lines), SECTION_TEXT_MAX - 40)
        out.append(
            {
                "type": "section",
                "text": _mrkdwn(listing + (f"\n…and {more} more" if more > 0 else "")),
            }
        )
    context: list[dict[str, Any]] = []
    if message.labels:
        context.append(
            _mrkdwn(" ".join(f"`{k}={v}`" for k, v in sorted(message.labels.items())), FIELD_MAX)
        )
    if message.url:
        context.append(_mrkdwn(f"<{message.url}|Open in watchkeeper>"))
    if message.note:
        context.append(_mrkdwn(message.note, FIELD_MAX))
    if context:
        out.append({"type": "context", "elements": context[:CONTEXT_ELEMENTS_MAX]})
    if message.buttons:
        elements = []
        for i, b in enumerate(message.buttons[:ACTIONS_MAX]):
            el: dict[str, Any] = {
                "type": "button",
                "text": {
                    "type": "plain_text",
                    "text": truncate(b.label, BUTTON_TEXT_MAX),
                    "emoji": True,
                },
                # action_id must be unique within the block; the prefix says what it does.
                "action_id": f"wk_{b.action}_{i}",
                "value": b.value[:BUTTON_VALUE_MAX],
            }
            if b.style:
                el["style"] = b.style
            elements.append(el)
        out.append({"type": "actions", "block_id": "watchkeeper_actions", "elements": elements})
    return out[:BLOCKS_MAX]


def fallback_text(message: Message) -> str:
    """The top-level `text`: shown in notifications and where blocks cannot be."""
    message = escaped(message, "slack")
    text = message.headline + (f"\n{message.summary}" if message.summary else "")
    return truncate(text, TEXT_MAX)


class SlackWebhook:
    """A Slack incoming webhook: posts Block Kit messages, cannot edit them."""

    platform = "slack_webhook"
    can_update = False

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name, self.url, self.timeout = name, url, timeout
        self.connection = Connection()  # one client per channel, reused

    async def aclose(self) -> None:
        """Close the channel's HTTP client."""
        await self.connection.aclose()

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Post the message; Slack answers 200 `ok` or an error word such as `invalid_blocks`."""
        resp = await post(
            self.url,
            "Slack",
            self.timeout,
            via=self.connection,
            json={"text": fallback_text(message), "blocks": blocks(message)},
        )
        if resp.status_code != 200:
            raise refusal(resp, "Slack")
        return {}


class SlackBot:
    """The Slack Web API as a bot: one message per incident, edited in place, replies in thread."""

    platform = "slack"
    can_update = True

    def __init__(self, name: str, token: str, channel: str, api_url: str, timeout: float) -> None:
        self.name, self.token, self.channel = name, token, channel
        self.api_url, self.timeout = api_url.rstrip("/"), timeout
        self.connection = Connection()  # one client per channel, reused

    async def aclose(self) -> None:
        """Close the channel's HTTP client."""
        await self.connection.aclose()

    async def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await post(
            f"{self.api_url}/{method}",
            "Slack",
            self.timeout,
            via=self.connection,
            json=body,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json; charset=utf-8",
            },
        )
        if resp.status_code != 200:
            raise refusal(resp, f"Slack {method}")
        try:
            data: dict[str, Any] = resp.json()
        except ValueError:
            raise SendError(
                f"Slack {method} answered with a body that is not JSON", recoverable=True
            ) from None
        if not data.get("ok"):
            error = str(data.get("error", "unknown_error"))
            detail = "; ".join(str(x) for x in data.get("errors", []) or [])
            raise SendError(
                f"Slack {method} refused: {error}" + (f" ({detail})" if detail else ""),
                recoverable=error in RECOVERABLE_ERRORS,
                status=200,
                platform_error=error,
            )
        return data

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Post a new message, or edit `previous` and reply in its thread with what changed."""
        body: dict[str, Any] = {"text": fallback_text(message), "blocks": blocks(message)}
        if previous and previous.get("ts"):
            channel, ts = previous.get("channel", self.channel), previous["ts"]
            await self._call("chat.update", {"channel": channel, "ts": ts, **body})
            if message.note:
                await self._call(
                    "chat.postMessage",
                    {
                        "channel": channel,
                        "thread_ts": ts,
                        "text": truncate(markup.slack(message.note), TEXT_MAX),
                        # An escalation is a page: show it in the channel too, not only the thread.
                        "reply_broadcast": message.kind == "escalated",
                    },
                )
            return {"channel": channel, "ts": ts}
        data = await self._call(
            "chat.postMessage", {"channel": self.channel, "unfurl_links": False, **body}
        )
        return {"channel": str(data.get("channel", self.channel)), "ts": str(data.get("ts", ""))}
