"""A generic JSON webhook: a documented envelope per event, optionally HMAC-signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from daemon.notify.content import truncate
from daemon.notify.pipeline import Message, MessageRef
from handlers.notifiers.http import Connection, post, refusal

ENVELOPE_VERSION = "1"
TEXT_MAX = 16_000


def envelope(message: Message, delivery_id: str, sent_at: int) -> dict[str, Any]:
    """The JSON body (see README, "Generic webhook")."""
    return {
        "version": ENVELOPE_VERSION,
        "event": message.event_type,
        "delivery_id": delivery_id,
        "sent_at": sent_at,
        "headline": message.headline,
        "text": truncate(message.summary, TEXT_MAX),
        "note": message.note,
        "incident_id": str(message.incident_id) if message.incident_id else None,
        "url": message.url or None,
        **message.data,
    }


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class JsonWebhook:
    """POSTs the envelope; 2xx means delivered."""

    platform = "webhook"
    can_update = False

    def __init__(self, name: str, url: str, timeout: float, secret: str = "") -> None:
        self.name, self.url, self.timeout, self.secret = name, url, timeout, secret
        self.connection = Connection()  # one client per channel, reused

    async def aclose(self) -> None:
        """Close the channel's HTTP client."""
        await self.connection.aclose()

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Send one event; the delivery id lets receivers drop duplicates."""
        delivery = str(uuid.uuid4())
        ts = int(time.time())
        body = json.dumps(envelope(message, delivery, ts), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Watchkeeper-Event": message.event_type,
            "X-Watchkeeper-Delivery": delivery,
            "X-Watchkeeper-Timestamp": str(ts),
        }
        if self.secret:
            headers["X-Watchkeeper-Signature"] = signature(self.secret, ts, body)
        resp = await post(
            self.url, "webhook", self.timeout, via=self.connection, content=body, headers=headers
        )
        if not 200 <= resp.status_code < 300:
            raise refusal(resp, "webhook")
        return {"delivery_id": delivery}
