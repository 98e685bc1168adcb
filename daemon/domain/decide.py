"""`decide(world, command, now) -> events`: every decision about alerts, incidents, silences.

Pure: no I/O, time passed in. Events are returned in order and each is evolved into a
working view before the next is decided, so one command can emit several dependent events.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import singledispatch
from uuid import NAMESPACE_URL, UUID, uuid5

from daemon.domain.alert_model import Alert
from daemon.domain.commands import (
    Acknowledge,
    Command,
    CreateSilence,
    EndSilence,
    ReceiveAlert,
    RecordDeadLetter,
    Rejected,
    ResolveIncident,
    Tick,
)
from daemon.domain.durations import format_duration
from daemon.domain.events import (
    AlertFired,
    AlertInhibited,
    AlertResolved,
    AlertSilenced,
    AlertUpdated,
    DeadLetterRecorded,
    DomainEvent,
    IncidentAcknowledged,
    IncidentClosed,
    IncidentOpened,
    IncidentReopened,
    IncidentResolved,
    SilenceCreated,
    SilenceEnded,
    SilencePurged,
    first_of,
    next_of,
    stamp,
)
from daemon.domain.evolve import evolve
from daemon.domain.inhibit import InhibitRule, inhibiting_source
from daemon.domain.limits import hot_set_problem
from daemon.domain.matchers import matches_all
from daemon.domain.state import Incident, World

# Pure deciders other parts of the core add to Tick (rule absence, deadlines, ...):
# each takes the world and `now` and returns events it has already evolved.
TickHook = Callable[[World, datetime], list[DomainEvent]]
TICK_HOOKS: list[TickHook] = []
# Pure deciders told when an alert opened a new incident (correlation into situations):
# each takes the world, the incident id, the alert and `now`, and returns evolved events.
OpenHook = Callable[[World, UUID, Alert, datetime], list[DomainEvent]]
OPEN_HOOKS: list[OpenHook] = []

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/ids")
# A refused alert's dead letter keeps the head of its labels, enough to see what it was.
_REFUSED_BYTES = 4096
# An alert refused again within this gets no second dead letter (the log would otherwise
# grow by every refused alert at every evaluation); at most this many are remembered.
_REFUSAL_MEMORY = timedelta(hours=1)
_REFUSALS_KEPT = 50_000


def incident_id_for(group_key: str, opened_at: datetime) -> UUID:
    """Deterministic incident id: one group has at most one incident opened at an instant."""
    return uuid5(_NS, f"incident|{group_key}|{opened_at.isoformat()}")


def silenced_stream_id(alert: Alert, episode: int) -> UUID:
    """Stream of one silenced firing episode (the world counts episodes, so ids never repeat).

    The same alert (same startsAt) can be silenced again after its lease ran out; a stream
    per episode keeps each stream's versions counting up from 1.
    """
    return uuid5(_NS, f"silenced|{alert.fingerprint}|{episode}")


def inhibited_stream_id(alert: Alert, episode: int) -> UUID:
    """Stream of one inhibited firing episode (numbered by the world, like silenced ones)."""
    return uuid5(_NS, f"inhibited|{alert.fingerprint}|{episode}")


def decide(world: World, command: Command, now: datetime) -> list[DomainEvent]:
    """Return the events `command` causes at `now`; they are already evolved into `world`.

    Raises `Rejected` (with nothing applied) when current state refuses the command.
    """
    return _decide(command, world, now)


@singledispatch
def _decide(command: object, world: World, now: datetime) -> list[DomainEvent]:
    raise TypeError(f"no decision for {type(command).__name__}")


class _Out:
    """Collects events and applies each to the world as it is emitted."""

    def __init__(self, world: World, now: datetime) -> None:
        self.world = world
        self.now = now
        self.events: list[DomainEvent] = []

    def emit(self, event: DomainEvent) -> None:
        evolve(event, self.world)
        self.events.append(event)


def emit_one(world: World, event: DomainEvent) -> list[DomainEvent]:
    """Evolve a single decided event into the world and return it as the decision."""
    evolve(event, world)
    return [event]


def _fire(out: _Out, alert: Alert) -> None:
    world, now = out.world, out.now
    silences = world.active_silences(alert.labels, now)
    if silences:
        if _refused_at_limits(out, alert, None, silenced=True):
            return
        out.emit(
            AlertSilenced(
                **first_of(silenced_stream_id(alert, world.silenced_episodes + 1), now),
                alert=alert,
                silence_ids=silences,
            )
        )
        return
    found = _inhibiting(world, alert) if world.policy.inhibit_rules else None
    if found is not None:
        if _refused_at_limits(out, alert, None, silenced=True):
            return
        source, rule = found
        out.emit(
            AlertInhibited(
                originator_id=inhibited_stream_id(alert, world.inhibited_episodes + 1),
                originator_version=1,
                timestamp=now,
                alert=alert,
                source_fingerprint=source.fingerprint,
                source_name=source.name,
                rule=rule.describe(),
            )
        )
        return
    key = world.policy.group_key(alert.labels)
    inc_id = world.groups.get(key)
    inc = world.incidents.get(inc_id) if inc_id else None
    if inc is not None and _reopen_window_over(inc, world, now):
        # No Tick has closed it yet (say the daemon was down): the window is over all the same.
        _close(out, inc)
        inc = None
    if _refused_at_limits(out, alert, inc):
        return
    if inc is None:
        inc_id = incident_id_for(key, now)
        out.emit(
            IncidentOpened(
                **first_of(inc_id, now),
                group_key=key,
                group_labels=world.policy.group_labels(alert.labels),
            )
        )
    elif inc.state == "resolved":
        out.emit(
            IncidentReopened(
                **next_of(inc, now),
                reason=f"{alert.name or alert.fingerprint} fired again within the reopen window",
            )
        )
    opened = inc is None
    inc = world.incidents[inc_id]  # type: ignore[index]
    out.emit(
        AlertFired(
            **next_of(inc, now),
            alert=alert,
        )
    )
    if opened:
        for hook in OPEN_HOOKS:
            out.events.extend(hook(world, inc.id, alert, now))


def _inhibiting(world: World, alert: Alert) -> tuple[Alert, InhibitRule] | None:
    """The firing alert and rule that inhibit `alert`, looked up in the world's source index."""
    for i, rule in enumerate(world.policy.inhibit_rules):
        if matches_all(rule.target_matchers, alert.labels):
            src = inhibiting_source(rule, alert, world.inhibit_candidates(i, rule, alert.labels))
            if src is not None:
                return src, rule
    return None


def _release_inhibited(out: _Out) -> None:
    """Evaluate inhibited alerts again: one whose source stopped firing fires like a new one."""
    world = out.world
    for fp in list(world.inhibited_firing):
        st = world.alerts[fp]
        src = world.alerts.get(st.inhibited_by)
        if src is not None and src.firing:
            continue
        _resolve_alert(out, fp, out.now, f"inhibiting alert {st.inhibited_by} stopped firing")
        _fire(out, st.alert)


def _resolved_while_firing_reason(
    inc: Incident,
    world: World,
    now: datetime,
    alert: Alert | None = None,
    started: datetime | None = None,
) -> str:
    """Why a resolved incident whose alerts never stopped firing must reopen now ("" if not).

    Only a person resolves an incident with firing alerts. Its alerts reopen it when one
    fires anew (a later startsAt: a new occurrence) or when they still fire after
    `resolve_grace` (bounded by the reopen window, so it never closes while firing).
    """
    if inc.state != "resolved" or inc.firing == 0 or inc.resolved_at is None:
        return ""
    if alert is not None and started is not None and alert.starts_at > started:
        return f"{alert.name or alert.fingerprint} fired again after a manual resolve"
    grace = min(world.policy.resolve_grace, world.policy.reopen_window)
    if now >= inc.resolved_at + grace:
        return (
            f"{inc.firing} alert(s) still firing {format_duration(now - inc.resolved_at)} "
            f"after {inc.resolved_by or 'a person'} resolved it"
        )
    return ""


def _reopen_if_still_firing(
    out: _Out, incident_id: UUID | None, alert: Alert | None = None, started: datetime | None = None
) -> None:
    inc = out.world.incidents.get(incident_id) if incident_id is not None else None
    if inc is None:
        return
    reason = _resolved_while_firing_reason(inc, out.world, out.now, alert, started)
    if reason:
        out.emit(
            IncidentReopened(
                originator_id=inc.id,
                originator_version=inc.version + 1,
                timestamp=out.now,
                reason=reason,
            )
        )


def _refused_at_limits(
    out: _Out, alert: Alert, inc: Incident | None, *, silenced: bool = False
) -> bool:
    """Refuse an alert the hot set has no room for, with a dead letter that says which limit."""
    world = out.world
    if alert.fingerprint in world.alerts:
        return False  # already held: firing again takes no more room
    members = world.members.get(inc.id, {}) if inc is not None else None
    problem = hot_set_problem(
        alerts=len(world.alerts),
        incidents=0 if silenced else len(world.incidents),
        in_incident=0 if silenced else None if members is None else len(members),
        limits=world.policy.limits,
    )
    if not problem:
        return False
    last = world.refused_at.get(alert.fingerprint)
    if last is not None and out.now - last < _REFUSAL_MEMORY:
        return True  # refused again: its dead letter is recent enough
    if len(world.refused_at) >= _REFUSALS_KEPT:
        world.refused_at.clear()
    world.refused_at[alert.fingerprint] = out.now
    payload = json.dumps({"labels": alert.labels}, ensure_ascii=False)
    out.emit(
        DeadLetterRecorded(
            originator_id=uuid5(_NS, f"refused|{alert.fingerprint}|{out.now.isoformat()}"),
            originator_version=1,
            timestamp=out.now,
            source=alert.source,
            reason=f"alert {alert.name or alert.fingerprint} refused: {problem}",
            payload=payload[:_REFUSED_BYTES],
            size=len(payload.encode()),
            truncated=len(payload) > _REFUSED_BYTES,
        )
    )
    return True


def _reopen_window_over(inc: Incident, world: World, now: datetime) -> bool:
    """Whether a resolved incident stayed resolved for the whole reopen window."""
    return (
        inc.state == "resolved"
        and inc.resolved_at is not None
        and now >= inc.resolved_at + world.policy.reopen_window
    )


def _close(out: _Out, inc: Incident) -> None:
    window = out.world.policy.reopen_window
    out.emit(
        IncidentClosed(
            **next_of(inc, out.now),
            reason=f"resolved for {format_duration(window)} without reopening",
        )
    )


def _resolve_alert(out: _Out, fingerprint: str, at: datetime, reason: str) -> None:
    world, now = out.world, out.now
    st = world.alerts[fingerprint]
    version = (
        world.incidents[st.incident_id].version + 1
        if st.incident_id is not None
        else st.stream_version + 1
    )
    out.emit(
        AlertResolved(
            **stamp(st.stream_id, version, now),
            fingerprint=fingerprint,
            resolved_at=min(at, now),
            reason=reason,
        )
    )
    if st.incident_id is None:
        return
    inc = world.incidents[st.incident_id]
    if inc.firing == 0 and inc.is_active:
        out.emit(
            IncidentResolved(
                **next_of(inc, now),
                reason="all alerts resolved",
            )
        )


@_decide.register
def _(cmd: ReceiveAlert, world: World, now: datetime) -> list[DomainEvent]:
    out = _Out(world, now)
    alert = cmd.alert
    current = world.alerts.get(alert.fingerprint)
    is_firing_now = current is not None and current.firing
    ended = alert.status == "resolved" or (alert.ends_at is not None and alert.ends_at <= now)
    if ended:
        if is_firing_now:
            _resolve_alert(out, alert.fingerprint, alert.ends_at or now, "resolved by source")
            if world.inhibited_firing:
                _release_inhibited(out)
        return out.events
    if current is None or not is_firing_now:
        _fire(out, alert)
        return out.events
    old = current.alert
    _reopen_if_still_firing(out, current.incident_id, alert, old.starts_at)
    if alert.ends_at is not None:
        # A renewal: soft state, no event (see World.leases).
        if old.ends_at is not None and alert.ends_at > world.leases.get(
            alert.fingerprint, old.ends_at
        ):
            world.leases[alert.fingerprint] = alert.ends_at
        return out.events
    if old.ends_at is None and old.annotations != alert.annotations:
        # Alertmanager re-sends a lease-less alert only when its group changed: worth keeping.
        version = (
            world.incidents[current.incident_id].version + 1
            if current.incident_id is not None
            else current.stream_version + 1
        )
        out.emit(
            AlertUpdated(
                **stamp(current.stream_id, version, now),
                fingerprint=alert.fingerprint,
                annotations=alert.annotations,
            )
        )
    return out.events


@_decide.register
def _(cmd: Tick, world: World, now: datetime) -> list[DomainEvent]:
    out = _Out(world, now)
    for s in list(world.silences.values()):
        if s.ended_at is None and now >= s.ends_at:
            out.emit(
                SilenceEnded(
                    **next_of(s, now),
                    reason="expired",
                )
            )
        elif s.ended_at is not None and now >= s.ended_at + world.policy.silence_retention:
            out.emit(SilencePurged(**next_of(s, now)))
    # Leases due now, from the heap (this runs every second and the hot set can hold
    # tens of thousands of alerts): a renewed lease goes back in at its new end.
    expired: dict[str, datetime] = {}
    heap = world.lease_heap
    while heap and heap[0][0] <= now:
        _, fp = heapq.heappop(heap)
        st = world.alerts.get(fp)
        end = world.lease_end(fp) if st is not None and st.firing else None
        if end is None or fp in expired:
            continue
        if end > now:
            heapq.heappush(heap, (end, fp))
        else:
            expired[fp] = end
    for fp, ends_at in expired.items():
        _resolve_alert(out, fp, ends_at, "lease expired: not renewed by its source")
    for fp in list(world.silenced_firing):
        # A silenced alert whose silences are all over is handled like a new firing.
        st = world.alerts[fp]
        if not world.active_silences(st.alert.labels, now):
            _resolve_alert(out, fp, now, "silence ended; alert moves to an incident")
            _fire(out, st.alert)
    if world.inhibited_firing:
        _release_inhibited(out)
    for inc in list(world.incidents.values()):
        _reopen_if_still_firing(out, inc.id)
        current = world.incidents[inc.id]
        if _reopen_window_over(current, world, now):
            _close(out, current)
    for hook in TICK_HOOKS:
        out.events.extend(hook(world, now))
    return out.events


@_decide.register
def _(cmd: Acknowledge, world: World, now: datetime) -> list[DomainEvent]:
    inc = world.incidents.get(cmd.incident_id)
    if inc is None:
        raise Rejected(f"no incident {cmd.incident_id} in the hot set (closed or unknown)", 404)
    if inc.state == "acknowledged":
        raise Rejected(f"incident already acknowledged by {inc.acknowledged_by}")
    if inc.state != "open":
        raise Rejected(f"incident is {inc.state}; only an open incident can be acknowledged")
    out = _Out(world, now)
    out.emit(
        IncidentAcknowledged(
            **next_of(inc, now),
            by=cmd.by,
            comment=cmd.comment,
        )
    )
    return out.events


@_decide.register
def _(cmd: ResolveIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = world.incidents.get(cmd.incident_id)
    if inc is None:
        raise Rejected(f"no incident {cmd.incident_id} in the hot set (closed or unknown)", 404)
    if not inc.is_active:
        raise Rejected(f"incident is already {inc.state}")
    out = _Out(world, now)
    reason = f"resolved by {cmd.by}" + (f": {cmd.comment}" if cmd.comment else "")
    out.emit(
        IncidentResolved(
            **next_of(inc, now),
            by=cmd.by,
            reason=reason,
        )
    )
    return out.events


@_decide.register
def _(cmd: CreateSilence, world: World, now: datetime) -> list[DomainEvent]:
    if not cmd.matchers:
        raise Rejected("a silence needs at least one matcher", 422)
    if all(m.matches({}) for m in cmd.matchers):
        raise Rejected(
            "at least one matcher must not match the empty string "
            "(a silence that matches every alert is refused)",
            422,
        )
    if cmd.ends_at <= cmd.starts_at:
        raise Rejected("endsAt must be after startsAt", 422)
    if cmd.ends_at <= now:
        raise Rejected("endsAt is in the past; the silence would never be active", 422)
    if cmd.silence_id in world.silences:
        raise Rejected(f"silence {cmd.silence_id} already exists")
    out = _Out(world, now)
    out.emit(
        SilenceCreated(
            **first_of(cmd.silence_id, now),
            matchers=cmd.matchers,
            starts_at=cmd.starts_at,
            ends_at=cmd.ends_at,
            created_by=cmd.by,
            comment=cmd.comment,
        )
    )
    return out.events


@_decide.register
def _(cmd: EndSilence, world: World, now: datetime) -> list[DomainEvent]:
    s = world.silences.get(cmd.silence_id)
    if s is None:
        raise Rejected(f"no silence {cmd.silence_id}", 404)
    if s.state(now) == "expired":
        raise Rejected("silence already expired")
    out = _Out(world, now)
    out.emit(
        SilenceEnded(
            **next_of(s, now),
            by=cmd.by,
            reason=f"removed by {cmd.by}",
        )
    )
    return out.events


@_decide.register
def _(cmd: RecordDeadLetter, world: World, now: datetime) -> list[DomainEvent]:
    return [
        DeadLetterRecorded(
            **first_of(cmd.record_id, now),
            source=cmd.source,
            reason=cmd.reason,
            payload=cmd.payload,
            size=cmd.size,
            truncated=cmd.size > len(cmd.payload.encode()),
        )
    ]
