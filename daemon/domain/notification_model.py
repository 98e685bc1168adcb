"""The notification log as events, its state, and the pure decisions of the notify pipeline.

Every message watchkeeper sends, fails to send, or holds back is recorded, so a restart
never re-sends what was sent, an incident's later changes edit the message it already
posted, and storm control counts what each channel received in its window. Decisions
return a self-describing reason, in the manner of Alertmanager's notify stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict

from daemon.domain.events import DomainEvent

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/notifications")
RECENT_KEPT = 1000  # send times kept per channel: enough for any storm limit we accept
HELD_KEPT = 200  # held-back notices listed per channel (more are only counted)
KEYS_KEPT = 64


def channel_stream(channel: str) -> UUID:
    """The stream holding one channel's notification records."""
    return uuid5(_NS, f"channel|{channel}")


# --- events ----------------------------------------------------------------------------


class IncidentEscalated(DomainEvent):
    """An incident's escalation reached a step of its policy (on the incident's stream)."""

    policy: str
    level: int
    round: int
    channels: tuple[str, ...]


class NotificationAttempted(DomainEvent):
    """A new message is about to be sent; committed before the notifier is called.

    Without a `NotificationSent` or `NotificationFailed` for the same incident and key after
    it, the daemon stopped in between (killed, or its leadership lost): the message may or
    may not have arrived. It is then recorded as delivery unknown and never sent again, so a
    restart or a new leader cannot post it twice (edits of a message are not recorded here:
    repeating an edit changes nothing).
    """

    channel: str
    incident_id: UUID | None = None
    kind: str
    key: str
    digest: str = ""


class NotificationSent(DomainEvent):
    """A message reached a channel; `ref` locates it there (e.g. Slack channel and ts)."""

    channel: str
    incident_id: UUID | None = None
    kind: str
    key: str
    platform: str
    ref: dict[str, str] = {}
    digest: str = ""
    attempts: int = 1
    detail: str = ""
    summarized: int = 0
    # False when an existing message was edited (it does not count toward storm control).
    new_message: bool = True


class NotificationFailed(DomainEvent):
    """A message could not be delivered; `platform_error` is what the platform answered."""

    channel: str
    incident_id: UUID | None = None
    kind: str
    key: str
    platform: str
    reason: str
    status: int | None = None
    platform_error: str = ""
    attempts: int = 1
    summarized: int = 0


class NotificationHeld(DomainEvent):
    """Storm control held a message back; a summary will list it."""

    channel: str
    incident_id: UUID | None = None
    kind: str
    key: str
    title: str
    reason: str


# --- state -----------------------------------------------------------------------------


class HeldNotice(BaseModel):
    """One held-back message, as the summary lists it."""

    model_config = ConfigDict(frozen=True)

    incident_id: UUID | None
    kind: str
    title: str
    at: datetime


class IncidentThread(BaseModel):
    """What one channel shows for one incident: where the message is and what it says."""

    model_config = ConfigDict(frozen=True)

    incident_id: UUID
    channel: str
    platform: str
    ref: dict[str, str] = {}
    digest: str = ""
    keys: tuple[str, ...] = ()
    first_sent_at: datetime
    last_sent_at: datetime


class PendingAttempt(BaseModel):
    """A new message whose sending began and has no recorded outcome yet."""

    model_config = ConfigDict(frozen=True)

    incident_id: UUID | None
    kind: str
    at: datetime


class ChannelLog(BaseModel):
    """Counters, recent send times and held-back notices of one channel."""

    stream_id: UUID
    version: int = 0
    sent: int = 0
    failed: int = 0
    held: int = 0
    recent: list[datetime] = []
    held_back: list[HeldNotice] = []
    held_pending: int = 0
    last_error: str = ""
    last_error_at: datetime | None = None
    # Messages being sent (or whose sender died), by `attempt_key`; cleared by the outcome.
    attempted: dict[str, PendingAttempt] = {}


class NotificationLog(BaseModel):
    """Per-channel logs and per-(incident, channel) threads, folded from notification events."""

    channels: dict[str, ChannelLog] = {}
    threads: dict[str, IncidentThread] = {}

    def channel(self, name: str) -> ChannelLog:
        """The log of a channel (an empty one if nothing was recorded yet)."""
        return self.channels.get(name) or ChannelLog(stream_id=channel_stream(name))

    def thread(self, incident_id: UUID, channel: str) -> IncidentThread | None:
        """The message a channel has for an incident, if any."""
        return self.threads.get(thread_key(incident_id, channel))

    def threads_of(self, incident_id: UUID) -> list[IncidentThread]:
        """Every channel's message for an incident."""
        return [t for t in self.threads.values() if t.incident_id == incident_id]


def thread_key(incident_id: UUID, channel: str) -> str:
    """Key of a thread in `NotificationLog.threads`."""
    return f"{incident_id}|{channel}"


def attempt_key(incident_id: UUID | None, key: str) -> str:
    """Key of a pending attempt in `ChannelLog.attempted` (a key is unique per incident)."""
    return f"{incident_id or '-'}|{key}"


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Escalate:
    """Record that an incident's escalation reached (level, round) of a policy."""

    incident_id: UUID
    policy: str
    level: int
    round: int
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordAttempt:
    """Record that a new message is about to be sent (before the notifier is called)."""

    channel: str
    incident_id: UUID | None
    kind: str
    key: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class RecordSent:
    """Record a delivered message."""

    channel: str
    incident_id: UUID | None
    kind: str
    key: str
    platform: str
    ref: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    attempts: int = 1
    detail: str = ""
    summarized: int = 0
    # False when an existing message was edited (it does not count toward storm control).
    new_message: bool = True


@dataclass(frozen=True, slots=True)
class RecordFailed:
    """Record a message that could not be delivered."""

    channel: str
    incident_id: UUID | None
    kind: str
    key: str
    platform: str
    reason: str
    status: int | None = None
    platform_error: str = ""
    attempts: int = 1
    summarized: int = 0


@dataclass(frozen=True, slots=True)
class RecordHeld:
    """Record a message storm control held back."""

    channel: str
    incident_id: UUID | None
    kind: str
    key: str
    title: str
    reason: str


# --- pure pipeline decisions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """A stage's decision: carry on or not, and why (logged, and stored when it matters)."""

    go: bool
    reason: str
    # Not sent because an earlier run began sending it and left no outcome: record it so.
    unknown: bool = False


DELIVERY_UNKNOWN = "delivery unknown: a previous run may have sent it; not re-sent"


def dedup_verdict(
    thread: IncidentThread | None,
    key: str,
    digest: str,
    *,
    needs_thread: bool,
    attempted: PendingAttempt | None = None,
) -> Verdict:
    """Whether a message is new: not sent under `key` before, and not identical to the last.

    `needs_thread` marks follow-ups (acknowledged, resolved) that only make sense where the
    channel already shows the incident. `attempted` is an earlier attempt at this very
    message without an outcome (its sender stopped in between): it may have arrived, so it
    is never sent again; an unacknowledged incident's next escalation step pages anew.
    """
    if thread is not None and key in thread.keys:
        return Verdict(False, f"already sent {key} at {thread.last_sent_at.isoformat()}")
    if attempted is not None:
        return Verdict(
            False, f"{DELIVERY_UNKNOWN} (attempted at {attempted.at.isoformat()})", unknown=True
        )
    if thread is None:
        if needs_thread:
            return Verdict(False, "channel has no message for this incident to follow up")
        return Verdict(True, "first message for this incident on this channel")
    if digest and digest == thread.digest and needs_thread:
        return Verdict(False, "the channel's message already shows this state")
    return Verdict(True, f"{key} not sent before")


def storm_verdict(log: ChannelLog, now: datetime, limit: int, window: timedelta) -> Verdict:
    """Whether the channel may take another message now: at most `limit` per `window`."""
    start = now - window
    recent = [t for t in log.recent[-limit:] if t > start] if limit > 0 else []
    if limit <= 0 or len(recent) < limit:
        return Verdict(True, f"{len(recent)} of {limit} messages used in the last {_fmt(window)}")
    return Verdict(
        False,
        f"storm control: {limit} messages already sent in the last {_fmt(window)}",
    )


def window_frees_at(log: ChannelLog, limit: int, window: timedelta) -> datetime | None:
    """When the channel's window next has room (None if it has room already)."""
    if limit <= 0 or len(log.recent) < limit:
        return None
    return log.recent[-limit] + window


def _fmt(d: timedelta) -> str:
    secs = int(d.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if secs >= size and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"
