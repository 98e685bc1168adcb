"""`decide` and `evolve` for escalation steps and the notification log."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from daemon.domain.commands import Rejected
from daemon.domain.decide import _decide, emit_one
from daemon.domain.events import DomainEvent, next_of, stamp
from daemon.domain.evolve import evolve
from daemon.domain.notification_model import (
    HELD_KEPT,
    KEYS_KEPT,
    RECENT_KEPT,
    ChannelLog,
    Escalate,
    HeldNotice,
    IncidentEscalated,
    IncidentThread,
    NotificationAttempted,
    NotificationFailed,
    NotificationHeld,
    NotificationSent,
    PendingAttempt,
    RecordAttempt,
    RecordFailed,
    RecordHeld,
    RecordSent,
    attempt_key,
    channel_stream,
    thread_key,
)
from daemon.domain.state import World


@_decide.register(Escalate)
def _escalate(cmd: Escalate, world: World, now: datetime) -> list[DomainEvent]:
    inc = world.incidents.get(cmd.incident_id)
    if inc is None:
        raise Rejected(f"no incident {cmd.incident_id} in the hot set (closed or unknown)", 404)
    event = IncidentEscalated(
        **next_of(inc, now),
        policy=cmd.policy,
        level=cmd.level,
        round=cmd.round,
        channels=cmd.channels,
    )
    return emit_one(world, event)


def _next_version(world: World, channel: str) -> int:
    return world.notifications.channel(channel).version + 1


@_decide.register(RecordAttempt)
def _attempt(cmd: RecordAttempt, world: World, now: datetime) -> list[DomainEvent]:
    event = NotificationAttempted(
        **stamp(channel_stream(cmd.channel), _next_version(world, cmd.channel), now),
        channel=cmd.channel,
        incident_id=cmd.incident_id,
        kind=cmd.kind,
        key=cmd.key,
        digest=cmd.digest,
    )
    return emit_one(world, event)


@_decide.register(RecordSent)
def _sent(cmd: RecordSent, world: World, now: datetime) -> list[DomainEvent]:
    event = NotificationSent(
        **stamp(channel_stream(cmd.channel), _next_version(world, cmd.channel), now),
        channel=cmd.channel,
        incident_id=cmd.incident_id,
        kind=cmd.kind,
        key=cmd.key,
        platform=cmd.platform,
        ref=cmd.ref,
        digest=cmd.digest,
        attempts=cmd.attempts,
        detail=cmd.detail,
        summarized=cmd.summarized,
        new_message=cmd.new_message,
    )
    return emit_one(world, event)


@_decide.register(RecordFailed)
def _failed(cmd: RecordFailed, world: World, now: datetime) -> list[DomainEvent]:
    event = NotificationFailed(
        **stamp(channel_stream(cmd.channel), _next_version(world, cmd.channel), now),
        channel=cmd.channel,
        incident_id=cmd.incident_id,
        kind=cmd.kind,
        key=cmd.key,
        platform=cmd.platform,
        reason=cmd.reason,
        status=cmd.status,
        platform_error=cmd.platform_error,
        attempts=cmd.attempts,
        summarized=cmd.summarized,
    )
    return emit_one(world, event)


@_decide.register(RecordHeld)
def _held(cmd: RecordHeld, world: World, now: datetime) -> list[DomainEvent]:
    event = NotificationHeld(
        **stamp(channel_stream(cmd.channel), _next_version(world, cmd.channel), now),
        channel=cmd.channel,
        incident_id=cmd.incident_id,
        kind=cmd.kind,
        key=cmd.key,
        title=cmd.title,
        reason=cmd.reason,
    )
    return emit_one(world, event)


# --- evolve ----------------------------------------------------------------------------


@evolve.register(IncidentEscalated)
def _(event: IncidentEscalated, world: World) -> None:
    inc = world.incidents.get(event.originator_id)
    if inc is not None:
        world.incidents[inc.id] = inc.model_copy(
            update={"version": event.originator_version, "updated_at": event.timestamp}
        )


def _channel(world: World, event: DomainEvent, name: str) -> ChannelLog:
    log = world.notifications.channels.get(name)
    if log is None:
        log = ChannelLog(stream_id=channel_stream(name))
        world.notifications.channels[name] = log
    log.version = event.originator_version
    return log


def _prune_threads(world: World) -> None:
    # Threads of incidents that left the hot set are no longer updated; keep memory flat.
    stale = [
        k for k, t in world.notifications.threads.items() if t.incident_id not in world.incidents
    ]
    for k in stale:
        del world.notifications.threads[k]


def _settled(world: World, log: ChannelLog, incident_id: UUID | None, key: str) -> None:
    # The attempt has its outcome; attempts of incidents gone from the hot set are dropped.
    log.attempted.pop(attempt_key(incident_id, key), None)
    stale = [
        k
        for k, a in log.attempted.items()
        if a.incident_id is not None and a.incident_id not in world.incidents
    ]
    for k in stale:
        del log.attempted[k]


@evolve.register(NotificationAttempted)
def _(event: NotificationAttempted, world: World) -> None:
    log = _channel(world, event, event.channel)
    log.attempted[attempt_key(event.incident_id, event.key)] = PendingAttempt(
        incident_id=event.incident_id, kind=event.kind, at=event.timestamp
    )
    # Bounded: normally only the messages in flight are here.
    for k in list(log.attempted)[:-KEYS_KEPT]:
        del log.attempted[k]


def _summarized(log: ChannelLog, n: int) -> None:
    if n <= 0:
        return
    del log.held_back[: min(n, len(log.held_back))]
    log.held_pending = max(log.held_pending - n, 0)


@evolve.register(NotificationSent)
def _(event: NotificationSent, world: World) -> None:
    log = _channel(world, event, event.channel)
    log.sent += 1
    _settled(world, log, event.incident_id, event.key)
    if event.new_message:
        log.recent.append(event.timestamp)
        del log.recent[:-RECENT_KEPT]
    _summarized(log, event.summarized)
    if event.incident_id is not None and event.incident_id in world.incidents:
        key = thread_key(event.incident_id, event.channel)
        old = world.notifications.threads.get(key)
        keys = ((*old.keys, event.key) if old else (event.key,))[-KEYS_KEPT:]
        world.notifications.threads[key] = IncidentThread(
            incident_id=event.incident_id,
            channel=event.channel,
            platform=event.platform,
            # A platform that edits in place keeps the first message's reference.
            ref=(old.ref if old and old.ref else event.ref),
            digest=event.digest,
            keys=keys,
            first_sent_at=old.first_sent_at if old else event.timestamp,
            last_sent_at=event.timestamp,
        )
    _prune_threads(world)


@evolve.register(NotificationFailed)
def _(event: NotificationFailed, world: World) -> None:
    log = _channel(world, event, event.channel)
    log.failed += 1
    _settled(world, log, event.incident_id, event.key)
    log.last_error = f"{event.reason}" + (
        f" ({event.platform_error})" if event.platform_error else ""
    )
    log.last_error_at = event.timestamp
    _summarized(log, event.summarized)
    _prune_threads(world)


@evolve.register(NotificationHeld)
def _(event: NotificationHeld, world: World) -> None:
    log = _channel(world, event, event.channel)
    log.held += 1
    log.held_pending += 1
    if len(log.held_back) < HELD_KEPT:
        log.held_back.append(
            HeldNotice(
                incident_id=event.incident_id,
                kind=event.kind,
                title=event.title,
                at=event.timestamp,
            )
        )
