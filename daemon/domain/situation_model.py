"""The Situation aggregate's facts: incidents with one probable cause, linked into one stream.

When a host dies, Prometheus fires a dozen alerts and watchkeeper opens as many incidents.
Incidents that share a target host (or a configured correlation key such as `cluster`) and
start within a window are linked into one situation, so one lead investigation works on
them and one page goes out. Every link records the rule (or the person) that made it, so
people can see why and unlink by hand. Decisions live in `situation_decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict

from daemon.domain.events import DomainEvent
from daemon.domain.lease import LeaseWait

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/situations")
PAST_KEPT = 500


def situation_id_for(first_incident_id: UUID) -> UUID:
    """Deterministic id: a situation is named after the incident it started from."""
    return uuid5(_NS, f"situation|{first_incident_id}")


class Correlation(BaseModel):
    """How incidents are linked automatically (the `situations:` config section)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    # Incidents opened within this long of a situation's start join it.
    window: timedelta = timedelta(minutes=5)
    # Label names whose equal values link incidents, besides the target host.
    keys: tuple[str, ...] = ()
    # Whether the target host (derived from instance/host/hostname/nodename) links incidents.
    by_host: bool = True
    # Steps a member incident's own investigation may take; 0: members start none, the
    # lead investigation covers them (it sees their alerts).
    member_steps: int = 0
    # How long an action waits for a host another action holds before a person decides.
    lease_wait: timedelta = timedelta(minutes=10)


# --- events ----------------------------------------------------------------------------


class SituationOpened(DomainEvent):
    """Two incidents were found to share a cause; the first becomes the lead."""

    lead_incident_id: UUID
    keys: dict[str, str] = {}
    rule: str
    reason: str
    by: str = ""


class SituationLinked(DomainEvent):
    """An incident joined the situation, by a correlation rule or by a person."""

    incident_id: UUID
    rule: str
    reason: str
    by: str = ""
    keys: dict[str, str] = {}


class SituationUnlinked(DomainEvent):
    """An incident left the situation; if it was the lead, `new_lead` takes over."""

    incident_id: UUID
    reason: str
    by: str = ""
    new_lead: UUID | None = None


class SituationClosed(DomainEvent):
    """Every member incident resolved, or too few remained linked."""

    reason: str


SITUATION_EVENTS = (SituationOpened, SituationLinked, SituationUnlinked, SituationClosed)


# --- state -----------------------------------------------------------------------------


class Link(BaseModel):
    """Why one incident is in a situation."""

    model_config = ConfigDict(frozen=True)

    incident_id: UUID
    rule: str
    reason: str
    by: str = ""
    at: datetime


class Situation(BaseModel):
    """Incidents linked by a probable common cause, and the one whose investigation leads."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    opened_at: datetime
    updated_at: datetime
    lead: UUID
    members: dict[UUID, Link] = {}
    keys: dict[str, str] = {}
    state: Literal["open", "closed"] = "open"
    closed_reason: str = ""


class Situations(BaseModel):
    """Open situations, which situation each incident is in, and a bounded past."""

    active: dict[UUID, Situation] = {}
    by_incident: dict[UUID, UUID] = {}
    past: dict[UUID, Situation] = {}
    # Incidents a person took out of a situation: correlation leaves them alone.
    kept_apart: dict[UUID, None] = {}
    # Approved actions waiting for a leased host (daemon/domain/lease.py), by action id.
    waiting: dict[UUID, LeaseWait] = {}

    def get(self, situation_id: UUID) -> Situation | None:
        """An open or recently closed situation."""
        return self.active.get(situation_id) or self.past.get(situation_id)

    def of_incident(self, incident_id: UUID) -> Situation | None:
        """The open situation an incident is in, if any."""
        sid = self.by_incident.get(incident_id)
        return self.active.get(sid) if sid is not None else None

    def is_member(self, incident_id: UUID) -> bool:
        """Whether the incident is in an open situation and is not its lead."""
        s = self.of_incident(incident_id)
        return s is not None and s.lead != incident_id


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkIncidents:
    """A person links incidents: into an existing situation, or into a new one."""

    incident_ids: tuple[UUID, ...]
    by: str
    situation_id: UUID | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnlinkIncident:
    """A person takes an incident out of its situation."""

    situation_id: UUID
    incident_id: UUID
    by: str
    reason: str = ""


SituationCommand = LinkIncidents | UnlinkIncident
