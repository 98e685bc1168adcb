"""Microsoft Teams through a Workflows webhook, as an Adaptive Card."""

from __future__ import annotations

import json
from typing import Any

from daemon.notify.content import truncate
from daemon.notify.markup import escaped
from daemon.notify.pipeline import Message, MessageRef
from handlers.notifiers.http import Connection, post, refusal

# Teams refuses webhook messages over about 28 KB; leave room for the envelope.
PAYLOAD_MAX_BYTES = 27_000
CARD_VERSION = "1.4"
_COLORS = {"#E01E5A": "Attention", "#ECB22E": "Warning", "#2EB67D": "Good"}


def card(message: Message, text_max: int = 4000) -> dict[str, Any]:
    """The Adaptive Card for a message (its text blocks are markdown: escaped first)."""
    message = escaped(message, "markdown")
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": truncate(message.headline, 300),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _COLORS.get(message.color, "Default"),
        }
    ]
    if message.summary:
        body.append(
            {"type": "TextBlock", "text": truncate(message.summary, text_max), "wrap": True}
        )
    if message.facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": k, "value": truncate(v, 500)} for k, v in message.facts],
            }
        )
    findings = []
    if message.probable_cause:
        findings.append(f"**Probable cause:** {message.probable_cause}")
    if message.agent_summary:
        findings.append(f"**Agent summary:** {message.agent_summary}")
    for p in message.proposals[:5]:
        findings.append(
            f"**Proposed action:** {p.runs or p.kind}" + (f" (risk {p.risk})" if p.risk else "")
        )
    if findings:
        body.append(
            {"type": "TextBlock", "text": truncate("\n\n".join(findings), text_max), "wrap": True}
        )
    if message.held:
        more = message.held_total - len(message.held)
        listing = "\n".join(f"- {h.title} ({h.kind})" for h in message.held)
        body.append(
            {
                "type": "TextBlock",
                "text": truncate(listing + (f"\n\n…and {more} more" if more > 0 else ""), text_max),
                "wrap": True,
            }
        )
    if message.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(message.labels.items()))
        body.append(
            {
                "type": "TextBlock",
                "text": truncate(labels, 1000),
                "wrap": True,
                "isSubtle": True,
                "size": "Small",
            }
        )
    if message.note:
        body.append(
            {
                "type": "TextBlock",
                "text": truncate(message.note, 1000),
                "wrap": True,
                "isSubtle": True,
            }
        )
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    if message.url:
        content["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open in watchkeeper", "url": message.url}
        ]
    return content


def payload(message: Message) -> dict[str, Any]:
    """The Workflows webhook body, shrunk until it fits Teams' size limit."""
    text_max = 4000
    while True:
        body = {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card(message, text_max),
                }
            ],
        }
        if len(json.dumps(body).encode()) <= PAYLOAD_MAX_BYTES or text_max <= 200:
            return body
        text_max //= 2


class TeamsWorkflow:
    """A Teams channel behind a Workflows "post when a webhook request is received" flow."""

    platform = "teams"
    can_update = False

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name, self.url, self.timeout = name, url, timeout
        self.connection = Connection()  # one client per channel, reused

    async def aclose(self) -> None:
        """Close the channel's HTTP client."""
        await self.connection.aclose()

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Post the card; Workflows answers 202 Accepted (older connectors 200)."""
        resp = await post(
            self.url, "Teams", self.timeout, via=self.connection, json=payload(message)
        )
        if resp.status_code not in (200, 202):
            err = ""
            try:
                data = resp.json()
                if isinstance(data, dict) and isinstance(data.get("error"), dict):
                    e = data["error"]
                    err = f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
            except ValueError:
                err = ""
            raise refusal(resp, "Teams", err)
        return {}
