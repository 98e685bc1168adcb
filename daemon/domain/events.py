"""Every fact watchkeeper records, as frozen pydantic events (in the style of eventsourcing's
aggregate7 example): an originator stream, a version within it, and when it happened."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypedDict
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from daemon.domain.alert_model import Alert
from daemon.domain.matchers import Matcher


class DomainEvent(BaseModel):
    """Base of all events: the stream it belongs to, its position there, and its time."""

    model_config = ConfigDict(frozen=True)

    originator_id: UUID
    originator_version: int
    timestamp: datetime


class Stamp(TypedDict):
    """The fields every event starts with, spread into it: `Event(**next_of(inc, now), ...)`."""

    originator_id: UUID
    originator_version: int
    timestamp: datetime


class Stream(Protocol):
    """An aggregate as a stream: its id and the version of its latest event."""

    @property
    def id(self) -> UUID: ...

    @property
    def version(self) -> int: ...


def stamp(stream_id: UUID, version: int, now: datetime) -> Stamp:
    """The stamp of the event at `version` in the stream `stream_id`, happening `now`."""
    return Stamp(originator_id=stream_id, originator_version=version, timestamp=now)


def first_of(stream_id: UUID, now: datetime) -> Stamp:
    """The stamp of the event that starts the stream `stream_id`."""
    return stamp(stream_id, 1, now)


def next_of(aggregate: Stream, now: datetime) -> Stamp:
    """The stamp of the event that follows `aggregate`'s latest one."""
    return stamp(aggregate.id, aggregate.version + 1, now)


# --- incidents -------------------------------------------------------------------------


class IncidentOpened(DomainEvent):
    """A firing alert found no open incident for its group."""

    group_key: str
    group_labels: dict[str, str]


class AlertFired(DomainEvent):
    """An alert started firing (new, or firing again after it resolved)."""

    alert: Alert


class AlertUpdated(DomainEvent):
    """A lease-less firing alert (from an Alertmanager webhook) arrived with new annotations."""

    fingerprint: str
    annotations: dict[str, str]


class AlertResolved(DomainEvent):
    """A firing alert stopped firing: resolved by its source, or its lease ran out."""

    fingerprint: str
    resolved_at: datetime
    reason: str


class AlertSilenced(DomainEvent):
    """A firing alert matched active silences: recorded, but it opens no incident."""

    alert: Alert
    silence_ids: tuple[UUID, ...]


class AlertInhibited(DomainEvent):
    """A firing alert was muted by an inhibit rule: recorded, but it opens no incident.

    `source_fingerprint` is the firing alert that inhibits it; when that one resolves the
    alert is evaluated again (and then opens or joins an incident like any new firing).
    """

    alert: Alert
    source_fingerprint: str
    source_name: str = ""
    rule: str = ""


class IncidentAcknowledged(DomainEvent):
    """A person took the incident."""

    by: str
    comment: str = ""


class IncidentResolved(DomainEvent):
    """The incident ended: all its alerts resolved, or a person resolved it."""

    by: str = ""
    reason: str


class IncidentReopened(DomainEvent):
    """An alert fired again in a resolved incident's group within the reopen window, its
    alerts kept firing after a manual resolve, or a person reopened it (`by`)."""

    reason: str
    by: str = ""
    channel: str = ""


class IncidentClosed(DomainEvent):
    """The reopen window of a resolved incident passed; a new alert opens a new incident."""

    reason: str


# --- silences --------------------------------------------------------------------------


class SilenceCreated(DomainEvent):
    """A silence: alerts matching all matchers between starts_at and ends_at open nothing."""

    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str = ""


class SilenceEnded(DomainEvent):
    """A silence expired or was removed."""

    by: str = ""
    reason: str


class SilencePurged(DomainEvent):
    """An ended silence passed its retention and leaves the state (its history stays)."""


# --- intake ----------------------------------------------------------------------------


class DeadLetterRecorded(DomainEvent):
    """Input that could not be accepted, kept (capped) so nothing is silently lost."""

    source: str
    reason: str
    payload: str
    size: int
    # Whether `payload` is cut short of the `size` bytes received (schema v2; see registry).
    truncated: bool = False


INCIDENT_EVENTS = (
    IncidentOpened,
    AlertFired,
    AlertUpdated,
    AlertResolved,
    IncidentAcknowledged,
    IncidentResolved,
    IncidentReopened,
    IncidentClosed,
)
