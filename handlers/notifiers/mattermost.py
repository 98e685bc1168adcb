"""Mattermost incoming webhooks with Slack-compatible message attachments."""

from __future__ import annotations

from typing import Any

from daemon.notify.content import truncate
from daemon.notify.markup import escaped
from daemon.notify.pipeline import Message, MessageRef
from handlers.notifiers.http import Connection, post, refusal

# Mattermost caps a post at 16,383 characters; attachments share that budget in practice.
POST_MAX = 16383
ATTACHMENT_TEXT_MAX = 8000
FIELD_VALUE_MAX = 1000
HELD_LISTED = 50


def payload(message: Message, username: str = "") -> dict[str, Any]:
    """The webhook body: a short `text` plus one attachment with the details."""
    headline = message.headline  # the attachment's title and fallback are plain text
    message = escaped(message, "markdown")
    parts = [message.summary] if message.summary else []
    if message.probable_cause:
        parts.append(f"**Probable cause:** {message.probable_cause}")
    if message.agent_summary:
        parts.append(f"**Agent summary:** {message.agent_summary}")
    for p in message.proposals[:5]:
        parts.append(
            f"**Proposed action:** `{p.runs or p.kind}`" + (f" (risk {p.risk})" if p.risk else "")
        )
    if message.held:
        parts.append("\n".join(f"- {h.title} ({h.kind})" for h in message.held[:HELD_LISTED]))
        more = message.held_total - min(len(message.held), HELD_LISTED)
        if more > 0:
            parts.append(f"…and {more} more")
    if message.note:
        parts.append(f"_{message.note}_")
    attachment: dict[str, Any] = {
        "fallback": truncate(headline, 300),
        "color": message.color,
        "title": truncate(headline, 300),
        "text": truncate("\n\n".join(parts), ATTACHMENT_TEXT_MAX),
        "fields": [
            {"short": True, "title": k, "value": truncate(v, FIELD_VALUE_MAX)}
            for k, v in message.facts
        ],
        "footer": "watchkeeper",
    }
    if message.url:
        attachment["title_link"] = message.url
    if message.labels:
        attachment["fields"].append(
            {
                "short": False,
                "title": "Labels",
                "value": truncate(
                    " ".join(f"`{k}={v}`" for k, v in sorted(message.labels.items())),
                    FIELD_VALUE_MAX,
                ),
            }
        )
    body: dict[str, Any] = {
        "text": truncate(message.headline, POST_MAX),
        "attachments": [attachment],
    }
    if username:
        body["username"] = username
    return body


class MattermostWebhook:
    """A Mattermost incoming webhook: posts only, so each update is a new post."""

    platform = "mattermost"
    can_update = False

    def __init__(self, name: str, url: str, timeout: float, username: str = "") -> None:
        self.name, self.url, self.timeout, self.username = name, url, timeout, username
        self.connection = Connection()  # one client per channel, reused

    async def aclose(self) -> None:
        """Close the channel's HTTP client."""
        await self.connection.aclose()

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Post; Mattermost answers 200 `ok`, or 4xx with a JSON `message` explaining why."""
        resp = await post(
            self.url,
            "Mattermost",
            self.timeout,
            via=self.connection,
            json=payload(message, self.username),
        )
        if resp.status_code != 200:
            err = ""
            try:
                data = resp.json()
                err = (
                    str(data.get("message") or data.get("id") or "")
                    if isinstance(data, dict)
                    else ""
                )
            except ValueError:
                err = ""
            raise refusal(resp, "Mattermost", err)
        return {}
