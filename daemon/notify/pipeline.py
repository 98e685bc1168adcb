"""Notifiers and the notify pipeline: dedup → storm control → send with retry → record.

A `ChatNotifier` (handlers/notifiers/*) turns a platform-neutral `Message` into one platform's
payload and delivers it, raising `SendError` with what the platform answered. The pipeline
is a sequence of small stages in the manner of Alertmanager's notify package: each stage
either passes a `Notice` on or ends it with an `Outcome` whose reason says why. Outcomes
become notification-log commands, recorded by the notify reaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from daemon.domain.backoff import backoff_delay
from daemon.domain.commands import Command
from daemon.domain.notification_model import (
    IncidentThread,
    RecordAttempt,
    RecordFailed,
    RecordHeld,
    RecordSent,
    attempt_key,
    dedup_verdict,
    storm_verdict,
)
from daemon.domain.state import World

log = logging.getLogger("watchkeeper.notify")
MessageRef = dict[str, str]


# --- the message -----------------------------------------------------------------------


class Button(BaseModel):
    """An interactive button (Slack); `value` is what comes back when it is pressed."""

    model_config = ConfigDict(frozen=True)

    action: Literal["ack", "approve", "reject"]
    label: str
    value: str
    style: Literal["primary", "danger", ""] = ""


class Proposal(BaseModel):
    """An action the agent proposed, as a message shows it."""

    model_config = ConfigDict(frozen=True)

    action_id: str
    kind: str
    runs: str = ""
    risk: str = ""
    status: str = ""
    rationale: str = ""


class HeldLine(BaseModel):
    """One held-back message listed in a storm summary."""

    model_config = ConfigDict(frozen=True)

    title: str
    kind: str
    url: str = ""


class Message(BaseModel):
    """What to tell a channel, independent of any platform."""

    model_config = ConfigDict(frozen=True)

    kind: str
    event_type: str
    incident_id: UUID | None = None
    headline: str
    title: str = ""
    severity: str = "none"
    state: str = ""
    color: str = "#808080"
    summary: str = ""
    note: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    labels: dict[str, str] = {}
    probable_cause: str = ""
    agent_summary: str = ""
    proposals: tuple[Proposal, ...] = ()
    buttons: tuple[Button, ...] = ()
    url: str = ""
    held: tuple[HeldLine, ...] = ()
    held_total: int = 0
    data: dict[str, Any] = {}


class SendError(Exception):
    """A delivery failed; carries the platform's answer and whether trying again can help."""

    def __init__(
        self,
        reason: str,
        *,
        recoverable: bool,
        status: int | None = None,
        platform_error: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recoverable = recoverable
        self.status = status
        self.platform_error = platform_error
        self.retry_after = retry_after


class ChatNotifier(Protocol):
    """One configured destination (a Slack channel, a Teams workflow, a webhook…)."""

    name: str
    platform: str
    # Whether a later message about the same incident edits the first one in place.
    can_update: bool

    async def deliver(self, message: Message, previous: MessageRef | None) -> MessageRef:
        """Send `message` (editing `previous` where the platform allows); return its reference.

        Raises `SendError` when the platform refuses or cannot be reached.
        """
        ...


# --- the pipeline ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """One message on its way to one channel, with what the log knows about that channel."""

    channel: str
    message: Message
    key: str
    digest: str
    thread: IncidentThread | None = None
    # Follow-ups (acknowledged, resolved…) only go where the incident was already shown.
    needs_thread: bool = False
    # A storm summary is always let through; it reports how many held notices it covers.
    summarized: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a notice ended, and why."""

    notice: Notice
    # "unknown": an earlier run began sending it and left no outcome (recorded as a failure).
    status: Literal["sent", "failed", "held", "skipped", "unknown"]
    reason: str
    platform: str = ""
    ref: MessageRef = field(default_factory=dict)
    attempts: int = 0
    http_status: int | None = None
    platform_error: str = ""
    new_message: bool = True

    def command(self) -> Command | None:
        """The notification-log record of this outcome (nothing for a skip)."""
        n, m = self.notice, self.notice.message
        if self.status == "sent":
            return RecordSent(
                channel=n.channel,
                incident_id=m.incident_id,
                kind=m.kind,
                key=n.key,
                platform=self.platform,
                ref=self.ref,
                digest=n.digest,
                attempts=self.attempts,
                detail=n.detail or self.reason,
                summarized=n.summarized,
                new_message=self.new_message,
            )
        if self.status in ("failed", "unknown"):
            return RecordFailed(
                channel=n.channel,
                incident_id=m.incident_id,
                kind=m.kind,
                key=n.key,
                platform=self.platform,
                reason=self.reason,
                status=self.http_status,
                platform_error=self.platform_error,
                attempts=self.attempts,
                summarized=n.summarized,
            )
        if self.status == "held":
            return RecordHeld(
                channel=n.channel,
                incident_id=m.incident_id,
                kind=m.kind,
                key=n.key,
                title=m.title or m.headline,
                reason=self.reason,
            )
        return None


class Stage(Protocol):
    """One step of the pipeline: end the notice with an Outcome, or return None to pass it on."""

    async def __call__(self, notice: Notice) -> Outcome | None:
        """Decide about one notice."""
        ...


def posts_new_message(notice: Notice, notifiers: Mapping[str, ChatNotifier]) -> bool:
    """Whether delivering this notice adds a message to the channel (rather than editing one)."""
    n = notifiers.get(notice.channel)
    return notice.thread is None or not (n is not None and n.can_update and notice.thread.ref)


def attempt_of(notice: Notice) -> RecordAttempt:
    """The record committed before a new message is sent (see `NotificationAttempted`)."""
    m = notice.message
    return RecordAttempt(
        channel=notice.channel,
        incident_id=m.incident_id,
        kind=m.kind,
        key=notice.key,
        digest=notice.digest,
    )


class Dedup:
    """Skips what the notification log says was already sent (a restart never re-sends),
    and what an earlier run began sending without recording how it went (delivery unknown:
    recorded as such, never sent again)."""

    def __init__(
        self,
        world: Callable[[], World],
        notifiers: Mapping[str, ChatNotifier] | None = None,
    ) -> None:
        self.world, self.notifiers = world, notifiers or {}

    async def __call__(self, notice: Notice) -> Outcome | None:
        chlog = self.world().notifications.channels.get(notice.channel)
        attempted = (
            chlog.attempted.get(attempt_key(notice.message.incident_id, notice.key))
            if chlog is not None
            else None
        )
        v = dedup_verdict(
            notice.thread,
            notice.key,
            notice.digest,
            needs_thread=notice.needs_thread,
            attempted=attempted,
        )
        if v.go:
            return None
        if v.unknown:
            n = self.notifiers.get(notice.channel)
            return Outcome(notice, "unknown", v.reason, n.platform if n else "")
        return Outcome(notice, "skipped", v.reason)


class StormControl:
    """Holds back new messages beyond the channel's budget; a summary reports them later."""

    def __init__(
        self,
        world: Callable[[], World],
        clock: Callable[[], datetime],
        notifiers: Mapping[str, ChatNotifier],
        limit: int,
        window: timedelta,
    ) -> None:
        self.world, self.clock, self.notifiers = world, clock, notifiers
        self.limit, self.window = limit, window

    async def __call__(self, notice: Notice) -> Outcome | None:
        if notice.summarized or not posts_new_message(notice, self.notifiers):
            return None
        log_ = self.world().notifications.channel(notice.channel)
        v = storm_verdict(log_, self.clock(), self.limit, self.window)
        return None if v.go else Outcome(notice, "held", v.reason)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry recoverable failures."""

    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 60.0


def retry_delay(
    err: SendError, attempt: int, policy: RetryPolicy, rand: Callable[[], float]
) -> tuple[float | None, str]:
    """Seconds to wait before attempt `attempt + 1` (None: give up), and why.

    Backoff doubles from `policy.backoff`, capped at `max_backoff`, with "equal jitter"
    (`backoff_delay`) so retries from several daemons spread out. A platform's Retry-After
    is obeyed as long as it fits within `max_backoff`.
    """
    if not err.recoverable:
        return None, f"not retried: {err.reason}"
    if attempt >= policy.attempts:
        return None, f"gave up after {attempt} attempts: {err.reason}"
    if err.retry_after is not None:
        if err.retry_after > policy.max_backoff:
            return None, (
                f"gave up: platform asked to wait {err.retry_after:g}s, "
                f"more than retry.max_backoff ({policy.max_backoff:g}s)"
            )
        wait = max(err.retry_after, 0.0)
        return wait, f"retry {attempt + 1}/{policy.attempts} in {wait:g}s as the platform asked"
    wait = backoff_delay(policy.backoff, policy.max_backoff, attempt - 1, rand)
    return wait, f"retry {attempt + 1}/{policy.attempts} in {wait:.2f}s after: {err.reason}"


class Deliver:
    """Sends through the channel's notifier, retrying recoverable failures with backoff."""

    def __init__(
        self,
        notifiers: Mapping[str, ChatNotifier],
        retry: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.notifiers, self.retry, self.sleep, self.rand = notifiers, retry, sleep, rand

    async def __call__(self, notice: Notice) -> Outcome:
        notifier = self.notifiers.get(notice.channel)
        if notifier is None:
            return Outcome(notice, "failed", f"no channel named {notice.channel} is configured")
        previous = notice.thread.ref if notice.thread and notice.thread.ref else None
        new = posts_new_message(notice, self.notifiers)
        attempt = 0
        while True:
            attempt += 1
            try:
                ref = await notifier.deliver(
                    notice.message, previous if notifier.can_update else None
                )
            except SendError as e:
                wait, reason = retry_delay(e, attempt, self.retry, self.rand)
                log.warning(
                    "notification failed channel=%s kind=%s attempt=%d status=%s error=%s next=%s",
                    notice.channel,
                    notice.message.kind,
                    attempt,
                    e.status,
                    e.platform_error or e.reason,
                    reason,
                )
                if wait is None:
                    return Outcome(
                        notice,
                        "failed",
                        reason,
                        notifier.platform,
                        attempts=attempt,
                        http_status=e.status,
                        platform_error=e.platform_error,
                        new_message=new,
                    )
                await self.sleep(wait)
                continue
            except Exception as e:  # a handler bug must not take the pipeline down
                log.exception("notifier crashed channel=%s", notice.channel)
                return Outcome(
                    notice,
                    "failed",
                    f"notifier error: {type(e).__name__}: {e}",
                    notifier.platform,
                    attempts=attempt,
                    new_message=new,
                )
            return Outcome(
                notice,
                "sent",
                "delivered" if attempt == 1 else f"delivered on attempt {attempt}",
                notifier.platform,
                ref=ref,
                attempts=attempt,
                new_message=new,
            )


# Commits the attempts at new messages before any of them is sent (one commit for all).
RecordAttempts = Callable[[Sequence[RecordAttempt]], Awaitable[None]]


class Pipeline:
    """Stages in order; the last one (Deliver) always ends the notice.

    Before a notice that posts a new message is delivered, `record_attempts` commits that
    it is about to be (an edit of a message is not recorded: repeating it changes nothing).
    If that commit fails, nothing is sent.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        deliver: Deliver,
        record_attempts: RecordAttempts | None = None,
    ) -> None:
        self.stages, self.deliver = list(stages), deliver
        self.record_attempts = record_attempts

    async def _decide(self, notice: Notice) -> Outcome | None:
        for stage in self.stages:
            out = await stage(notice)
            if out is not None:
                return out
        return None

    async def run(self, notice: Notice) -> Outcome:
        """Take one notice through every stage."""
        return (await self.run_all([notice], quiet=True))[0]

    async def run_all(self, notices: Sequence[Notice], *, quiet: bool = False) -> list[Outcome]:
        """Fan out: each channel's notice goes through the pipeline concurrently."""
        decided = await asyncio.gather(*(self._decide(n) for n in notices))
        going = [n for n, o in zip(notices, decided, strict=True) if o is None]
        new = [n for n in going if posts_new_message(n, self.deliver.notifiers)]
        if new and self.record_attempts is not None:
            await self.record_attempts([attempt_of(n) for n in new])
        sent = iter(await asyncio.gather(*(self.deliver(n) for n in going)))
        outs = [o if o is not None else next(sent) for o in decided]
        if quiet:
            return outs
        for o in outs:
            log.info(
                "notification %s channel=%s kind=%s incident=%s reason=%s",
                o.status,
                o.notice.channel,
                o.notice.message.kind,
                o.notice.message.incident_id,
                o.reason,
            )
        return list(outs)


def with_thread(notice: Notice, thread: IncidentThread | None) -> Notice:
    """The same notice, with the channel's current thread."""
    return replace(notice, thread=thread)


def notification_status(world: World) -> dict[str, dict[str, Any]]:
    """Per channel: messages sent, failed, held back, and the last failure (for status/metrics)."""
    return {
        name: {
            "sent": ch.sent,
            "failed": ch.failed,
            "held": ch.held,
            "held_pending": ch.held_pending,
            "last_error": ch.last_error,
            "last_error_at": ch.last_error_at.isoformat() if ch.last_error_at else None,
        }
        for name, ch in sorted(world.notifications.channels.items())
    }
