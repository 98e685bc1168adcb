"""What people do to an incident besides ack and resolve: note, assign, unacknowledge,
snooze, reopen, change severity, link it to another. Each is an event saying who, when
and through which channel (api, cli, console, slack); registered with `decide`/`evolve`
on import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from daemon.domain.commands import Rejected
from daemon.domain.decide import _decide, _Out
from daemon.domain.events import DomainEvent, IncidentReopened, next_of
from daemon.domain.evolve import _bump, evolve
from daemon.domain.state import SEVERITY_RANK, Incident, World

NOTE_MAX = 4000
SEVERITIES = tuple(SEVERITY_RANK)

# --- events ----------------------------------------------------------------------------


class IncidentNoted(DomainEvent):
    """A person wrote a note on the incident."""

    by: str
    channel: str = "api"
    text: str


class IncidentAssigned(DomainEvent):
    """The incident has an owner now ("" when it was unassigned)."""

    by: str
    channel: str = "api"
    assignee: str
    previous: str = ""


class IncidentUnacknowledged(DomainEvent):
    """A person gave the incident back: it is open again and nobody has it."""

    by: str
    channel: str = "api"
    reason: str = ""
    previous: str = ""


class IncidentSnoozed(DomainEvent):
    """Escalation of the incident is paused until `until` (nothing else changes)."""

    by: str
    channel: str = "api"
    until: datetime
    reason: str = ""


class IncidentSeverityChanged(DomainEvent):
    """A person set the incident's severity."""

    by: str
    channel: str = "api"
    severity: str
    previous: str
    reason: str = ""


class IncidentLinked(DomainEvent):
    """A person linked the incident to another one (same cause, duplicate, follow-up)."""

    by: str
    channel: str = "api"
    other: UUID
    reason: str = ""


WORK_EVENTS = (
    IncidentNoted,
    IncidentAssigned,
    IncidentUnacknowledged,
    IncidentSnoozed,
    IncidentSeverityChanged,
    IncidentLinked,
)

# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteIncident:
    """Add a note."""

    incident_id: UUID
    by: str
    text: str
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class AssignIncident:
    """Give the incident an owner (`assignee` "" unassigns; the caller's name takes it)."""

    incident_id: UUID
    by: str
    assignee: str
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class UnacknowledgeIncident:
    """Undo an acknowledgement."""

    incident_id: UUID
    by: str
    reason: str = ""
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class SnoozeIncident:
    """Pause escalation until a time."""

    incident_id: UUID
    by: str
    until: datetime
    reason: str = ""
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class ReopenIncident:
    """Reopen a resolved incident by hand."""

    incident_id: UUID
    by: str
    reason: str = ""
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class ChangeSeverity:
    """Set the incident's severity."""

    incident_id: UUID
    by: str
    severity: str
    reason: str = ""
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class LinkIncident:
    """Link the incident to another (hot or recently closed) one."""

    incident_id: UUID
    by: str
    other: UUID
    reason: str = ""
    channel: str = "api"


def _hot(world: World, incident_id: UUID) -> Incident:
    inc = world.incidents.get(incident_id)
    if inc is None:
        raise Rejected(f"no incident {incident_id} in the hot set (closed or unknown)", 404)
    return inc


def _active(world: World, incident_id: UUID, verb: str) -> Incident:
    inc = _hot(world, incident_id)
    if not inc.is_active:
        raise Rejected(f"incident is {inc.state}; only an open or acknowledged one can be {verb}")
    return inc


# --- decisions -------------------------------------------------------------------------


@_decide.register
def _(cmd: NoteIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    text = cmd.text.strip()
    if not text:
        raise Rejected("a note needs some text", 422)
    if len(text) > NOTE_MAX:
        raise Rejected(f"a note holds at most {NOTE_MAX} characters (got {len(text)})", 422)
    out = _Out(world, now)
    out.emit(IncidentNoted(**next_of(inc, now), by=cmd.by, channel=cmd.channel, text=text))
    return out.events


@_decide.register
def _(cmd: AssignIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    assignee = cmd.assignee.strip()
    if assignee == inc.assignee:
        raise Rejected(
            f"incident is already assigned to {assignee}" if assignee else "incident has no owner"
        )
    out = _Out(world, now)
    out.emit(
        IncidentAssigned(
            **next_of(inc, now),
            by=cmd.by,
            channel=cmd.channel,
            assignee=assignee,
            previous=inc.assignee,
        )
    )
    return out.events


@_decide.register
def _(cmd: UnacknowledgeIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    if inc.state != "acknowledged":
        raise Rejected(f"incident is {inc.state}; only an acknowledged one can be unacknowledged")
    out = _Out(world, now)
    out.emit(
        IncidentUnacknowledged(
            **next_of(inc, now),
            by=cmd.by,
            channel=cmd.channel,
            reason=cmd.reason,
            previous=inc.acknowledged_by,
        )
    )
    return out.events


@_decide.register
def _(cmd: SnoozeIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _active(world, cmd.incident_id, "snoozed")
    if cmd.until <= now:
        raise Rejected("snooze until a time in the future", 422)
    out = _Out(world, now)
    out.emit(
        IncidentSnoozed(
            **next_of(inc, now),
            by=cmd.by,
            channel=cmd.channel,
            until=cmd.until,
            reason=cmd.reason,
        )
    )
    return out.events


@_decide.register
def _(cmd: ReopenIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    if inc.state != "resolved":
        raise Rejected(f"incident is {inc.state}; only a resolved one can be reopened")
    out = _Out(world, now)
    reason = f"reopened by {cmd.by}" + (f": {cmd.reason}" if cmd.reason else "")
    out.emit(IncidentReopened(**next_of(inc, now), reason=reason, by=cmd.by, channel=cmd.channel))
    return out.events


@_decide.register
def _(cmd: ChangeSeverity, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    if cmd.severity not in SEVERITIES:
        raise Rejected(f"severity must be one of {', '.join(SEVERITIES)}", 422)
    if cmd.severity == inc.severity:
        raise Rejected(f"severity is already {inc.severity}")
    out = _Out(world, now)
    out.emit(
        IncidentSeverityChanged(
            **next_of(inc, now),
            by=cmd.by,
            channel=cmd.channel,
            severity=cmd.severity,
            previous=inc.severity,
            reason=cmd.reason,
        )
    )
    return out.events


@_decide.register
def _(cmd: LinkIncident, world: World, now: datetime) -> list[DomainEvent]:
    inc = _hot(world, cmd.incident_id)
    if cmd.other == inc.id:
        raise Rejected("an incident cannot be linked to itself", 422)
    if cmd.other not in world.incidents and cmd.other not in world.closed:
        raise Rejected(f"no incident {cmd.other} to link to (unknown, or closed long ago)", 404)
    if cmd.other in inc.links:
        raise Rejected(f"already linked to {cmd.other}")
    out = _Out(world, now)
    out.emit(
        IncidentLinked(
            **next_of(inc, now),
            by=cmd.by,
            channel=cmd.channel,
            other=cmd.other,
            reason=cmd.reason,
        )
    )
    return out.events


# --- state changes ---------------------------------------------------------------------


@evolve.register
def _(event: IncidentNoted, world: World) -> None:
    inc = world.incidents[event.originator_id]
    _bump(world, event, notes=inc.notes + 1)


@evolve.register
def _(event: IncidentAssigned, world: World) -> None:
    _bump(world, event, assignee=event.assignee)


@evolve.register
def _(event: IncidentUnacknowledged, world: World) -> None:
    _bump(world, event, state="open", acknowledged_by="")


@evolve.register
def _(event: IncidentSnoozed, world: World) -> None:
    _bump(world, event, snoozed_until=event.until)


@evolve.register
def _(event: IncidentSeverityChanged, world: World) -> None:
    _bump(world, event, severity=event.severity)


@evolve.register
def _(event: IncidentLinked, world: World) -> None:
    inc = world.incidents[event.originator_id]
    _bump(world, event, links=(*inc.links, event.other))
