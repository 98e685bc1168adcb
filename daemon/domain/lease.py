"""Per-target action leases: while an action runs or verifies on a host, nothing else runs there.

The lease is not a record of its own: it is held by any action on the host whose state says
it may still be changing the host (dispatched, verifying, rolling back, or of unknown
outcome while its incident is open), so it is rebuilt from the log like everything else
and survives restarts. A second action on the host waits (`ActionLeaseWaiting`, with a
deadline); when the lease is free it is dispatched, and if the deadline passes first it
is cancelled with the reason and handed to a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from daemon.domain.action_model import ActionEntry
from daemon.domain.events import DomainEvent
from daemon.domain.targets import target_host

LEASE_DEADLINE = "action-lease"
# States in which an action may still be changing its host.
HOLDING = frozenset({"dispatched", "verifying", "rolling_back", "verification_failed"})


def action_target(entry: ActionEntry) -> str:
    """The host an action acts on: its recorded target, else what its labels name."""
    return entry.target or target_host(entry.labels)


class ActionLeaseWaiting(DomainEvent):
    """An approved action found its host leased by another action; it waits until `until`."""

    incident_id: UUID
    target: str
    held_by: UUID
    holder: str
    until: datetime


class LeaseWait(BaseModel):
    """One action waiting for a host."""

    model_config = ConfigDict(frozen=True)

    target: str
    held_by: UUID
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class LeaseBusy:
    """Why an action cannot be dispatched now: who holds its host, and how long it waits."""

    target: str
    holder: ActionEntry
    waiting: LeaseWait | None

    def reason(self) -> str:
        """The holder in words, for events and people."""
        what = self.holder.plan.summary if self.holder.plan else self.holder.action_id
        return f"action {self.holder.id} ({what}) is {self.holder.status} on {self.target}"


def lease_holder(
    actions: dict[UUID, ActionEntry], open_incidents: set[UUID], entry: ActionEntry
) -> ActionEntry | None:
    """The other action holding `entry`'s target host, if any."""
    target = action_target(entry)
    if not target:
        return None
    for other in actions.values():
        if other.id == entry.id:
            continue
        holds = other.status in HOLDING or (
            other.status == "unknown" and other.incident_id in open_incidents
        )
        if holds and action_target(other) == target:
            return other
    return None


def lease_busy(
    actions: dict[UUID, ActionEntry],
    open_incidents: set[UUID],
    waits: dict[UUID, LeaseWait],
    entry: ActionEntry,
) -> LeaseBusy | None:
    """Whether `entry` must wait for its host, and since when it has been waiting."""
    holder = lease_holder(actions, open_incidents, entry)
    if holder is None:
        return None
    return LeaseBusy(action_target(entry), holder, waits.get(entry.id))


def wait_over(busy: LeaseBusy, now: datetime) -> bool:
    """Whether an action waited for its host until its deadline."""
    return busy.waiting is not None and now >= busy.waiting.until


def situation_rival(
    actions: dict[UUID, ActionEntry], members: set[UUID], entry: ActionEntry
) -> ActionEntry | None:
    """Another unfinished action proposed for an incident of the same situation, if any.

    Two proposals for one probable cause (restart a service, reboot its host) may
    conflict; neither runs without a person, who sees them together.
    """
    for other in actions.values():
        if other.id != entry.id and other.incident_id in members and not other.finished:
            return other
    return None
