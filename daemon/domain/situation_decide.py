"""`decide` and `evolve` for situations: correlation when an incident opens, links by hand,
and closing once every member incident is over."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from daemon.domain.alert_model import Alert
from daemon.domain.commands import Rejected
from daemon.domain.decide import OPEN_HOOKS, TICK_HOOKS, _decide, _Out
from daemon.domain.durations import format_duration
from daemon.domain.events import DomainEvent
from daemon.domain.evolve import evolve
from daemon.domain.situation_model import (
    PAST_KEPT,
    Correlation,
    Link,
    LinkIncidents,
    Situation,
    SituationClosed,
    SituationLinked,
    SituationOpened,
    SituationUnlinked,
    UnlinkIncident,
    situation_id_for,
)
from daemon.domain.state import World
from daemon.domain.targets import target_host


def correlation_keys(labels: Mapping[str, str], corr: Correlation) -> dict[str, str]:
    """What an incident can be linked by: its target host and the configured label values."""
    keys: dict[str, str] = {}
    if corr.by_host:
        host = target_host(labels)
        if host:
            keys["host"] = host
    for name in corr.keys:
        if labels.get(name):
            keys[name] = labels[name]
    return keys


def _incident_keys(world: World, incident_id: UUID) -> dict[str, str]:
    """Correlation keys of a hot incident, from its first alert."""
    for st in world.member_alerts(incident_id):
        return correlation_keys(st.alert.labels, world.policy.correlation)
    return {}


def _shared(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[str, str] | None:
    for k, v in a.items():
        if b.get(k) == v:
            return k, v
    return None


def correlate(world: World, incident_id: UUID, alert: Alert, now: datetime) -> list[DomainEvent]:
    """Link a newly opened incident to a situation, or open one with a recent incident."""
    corr = world.policy.correlation
    if not corr.enabled:
        return []
    keys = correlation_keys(alert.labels, corr)
    if not keys:
        return []
    out = _Out(world, now)
    book = world.situations
    window = format_duration(corr.window)
    for s in book.active.values():
        hit = _shared(s.keys, keys)
        if hit is None or now - s.opened_at > corr.window:
            continue
        k, v = hit
        out.emit(
            SituationLinked(
                originator_id=s.id,
                originator_version=s.version + 1,
                timestamp=now,
                incident_id=incident_id,
                rule=f"same {k}",
                reason=f"{k}={v}, opened within {window} of the situation",
                keys=keys,
            )
        )
        return out.events
    # No open situation: look back over incidents opened within the window (newest first).
    for other in reversed(world.incidents.values()):
        if now - other.opened_at > corr.window:
            break
        if (
            other.id == incident_id
            or not other.is_active
            or other.id in book.by_incident
            or other.id in book.kept_apart
        ):
            continue
        other_keys = _incident_keys(world, other.id)
        hit = _shared(other_keys, keys)
        if hit is None:
            continue
        k, v = hit
        sid = situation_id_for(other.id)
        if book.get(sid) is not None:
            continue  # its earlier situation closed; do not reuse the stream
        reason = f"{k}={v}, opened within {window} of each other"
        out.emit(
            SituationOpened(
                originator_id=sid,
                originator_version=1,
                timestamp=now,
                lead_incident_id=other.id,
                keys=other_keys,
                rule=f"same {k}",
                reason=reason,
            )
        )
        out.emit(
            SituationLinked(
                originator_id=sid,
                originator_version=2,
                timestamp=now,
                incident_id=incident_id,
                rule=f"same {k}",
                reason=reason,
                keys=keys,
            )
        )
        return out.events
    return out.events


def close_finished(world: World, now: datetime) -> list[DomainEvent]:
    """Close situations whose member incidents are all resolved or closed."""
    out = _Out(world, now)
    for s in list(world.situations.active.values()):
        live = [i for i in s.members if (inc := world.incidents.get(i)) and inc.is_active]
        if not live:
            out.emit(
                SituationClosed(
                    originator_id=s.id,
                    originator_version=s.version + 1,
                    timestamp=now,
                    reason="every member incident resolved",
                )
            )
    return out.events


OPEN_HOOKS.append(correlate)
TICK_HOOKS.append(close_finished)


@_decide.register(LinkIncidents)
def _link(cmd: LinkIncidents, world: World, now: datetime) -> list[DomainEvent]:
    book = world.situations
    if not cmd.incident_ids:
        raise Rejected("name at least one incident to link", 422)
    for iid in cmd.incident_ids:
        if iid not in world.incidents:
            raise Rejected(f"no incident {iid} in the hot set (closed or unknown)", 404)
    reason = cmd.reason or f"linked by {cmd.by}"
    out = _Out(world, now)
    if cmd.situation_id is None:
        if len(set(cmd.incident_ids)) < 2:
            raise Rejected("a new situation needs two incidents or more", 422)
        for iid in cmd.incident_ids:
            other = book.of_incident(iid)
            if other is not None:
                raise Rejected(
                    f"incident {iid} is already in situation {other.id}; unlink it first"
                )
        ordered = sorted(set(cmd.incident_ids), key=lambda i: world.incidents[i].opened_at)
        lead = ordered[0]
        sid = situation_id_for(lead)
        if book.get(sid) is not None:
            raise Rejected(f"incident {lead} already led situation {sid}; link into it instead")
        out.emit(
            SituationOpened(
                originator_id=sid,
                originator_version=1,
                timestamp=now,
                lead_incident_id=lead,
                keys=_incident_keys(world, lead),
                rule="by hand",
                reason=reason,
                by=cmd.by,
            )
        )
        rest = ordered[1:]
    else:
        s = book.active.get(cmd.situation_id)
        if s is None:
            raise Rejected(f"no open situation {cmd.situation_id}", 404)
        sid = s.id
        rest = []
        for iid in dict.fromkeys(cmd.incident_ids):
            other = book.of_incident(iid)
            if other is not None and other.id == sid:
                continue
            if other is not None:
                raise Rejected(
                    f"incident {iid} is already in situation {other.id}; unlink it first"
                )
            rest.append(iid)
        if not rest:
            raise Rejected("every incident named is already in this situation")
    for iid in rest:
        s = book.active[sid]
        out.emit(
            SituationLinked(
                originator_id=sid,
                originator_version=s.version + 1,
                timestamp=now,
                incident_id=iid,
                rule="by hand",
                reason=reason,
                by=cmd.by,
                keys=_incident_keys(world, iid),
            )
        )
    return out.events


@_decide.register(UnlinkIncident)
def _unlink(cmd: UnlinkIncident, world: World, now: datetime) -> list[DomainEvent]:
    s = world.situations.active.get(cmd.situation_id)
    if s is None:
        raise Rejected(f"no open situation {cmd.situation_id}", 404)
    if cmd.incident_id not in s.members:
        raise Rejected(f"incident {cmd.incident_id} is not in situation {s.id}", 404)
    remaining = [i for i in s.members if i != cmd.incident_id]
    new_lead = remaining[0] if cmd.incident_id == s.lead and remaining else None
    out = _Out(world, now)
    out.emit(
        SituationUnlinked(
            originator_id=s.id,
            originator_version=s.version + 1,
            timestamp=now,
            incident_id=cmd.incident_id,
            reason=cmd.reason or f"unlinked by {cmd.by}",
            by=cmd.by,
            new_lead=new_lead,
        )
    )
    if len(remaining) < 2:
        out.emit(
            SituationClosed(
                originator_id=s.id,
                originator_version=s.version + 2,
                timestamp=now,
                reason="fewer than two incidents left linked",
            )
        )
    return out.events


@evolve.register(SituationOpened)
def _(event: SituationOpened, world: World) -> None:
    lead = event.lead_incident_id
    world.situations.active[event.originator_id] = Situation(
        id=event.originator_id,
        version=event.originator_version,
        opened_at=event.timestamp,
        updated_at=event.timestamp,
        lead=lead,
        members={
            lead: Link(
                incident_id=lead,
                rule=event.rule,
                reason=event.reason,
                by=event.by,
                at=event.timestamp,
            )
        },
        keys=event.keys,
    )
    world.situations.by_incident[lead] = event.originator_id


@evolve.register(SituationLinked)
def _(event: SituationLinked, world: World) -> None:
    s = world.situations.active[event.originator_id]
    link = Link(
        incident_id=event.incident_id,
        rule=event.rule,
        reason=event.reason,
        by=event.by,
        at=event.timestamp,
    )
    world.situations.active[s.id] = s.model_copy(
        update={
            "version": event.originator_version,
            "updated_at": event.timestamp,
            "members": {**s.members, event.incident_id: link},
            "keys": {**event.keys, **s.keys},
        }
    )
    world.situations.by_incident[event.incident_id] = s.id
    world.situations.kept_apart.pop(event.incident_id, None)


@evolve.register(SituationUnlinked)
def _(event: SituationUnlinked, world: World) -> None:
    book = world.situations
    s = book.active[event.originator_id]
    members = {i: link for i, link in s.members.items() if i != event.incident_id}
    book.active[s.id] = s.model_copy(
        update={
            "version": event.originator_version,
            "updated_at": event.timestamp,
            "members": members,
            "lead": event.new_lead or s.lead,
        }
    )
    book.by_incident.pop(event.incident_id, None)
    if event.by:
        book.kept_apart[event.incident_id] = None
        while len(book.kept_apart) > PAST_KEPT:
            del book.kept_apart[next(iter(book.kept_apart))]


@evolve.register(SituationClosed)
def _(event: SituationClosed, world: World) -> None:
    book = world.situations
    s = book.active.pop(event.originator_id)
    for iid in s.members:
        if book.by_incident.get(iid) == s.id:
            del book.by_incident[iid]
    book.past[s.id] = s.model_copy(
        update={
            "version": event.originator_version,
            "updated_at": event.timestamp,
            "state": "closed",
            "closed_reason": event.reason,
        }
    )
    while len(book.past) > PAST_KEPT:
        del book.past[next(iter(book.past))]
