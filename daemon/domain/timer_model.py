"""Durable timers as events: a deadline is set, then fires exactly once or is cancelled.

Any part of watchkeeper that must act later (escalation levels, storm summaries, approval
expiry) sets a `Deadline` with a `kind`, the ids it concerns (`subjects`) and a small
payload. The timer service fires due deadlines through the Ingestor; `decide` refuses a
second fire, so a deadline fires once even across restarts. Decisions live in
`daemon.domain.timer_rules`; this module holds the facts and the state only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict

from daemon.domain.events import DomainEvent

Payload = dict[str, str | int | float | bool]
_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/deadlines")
FINISHED_KEPT = 10_000


def deadline_id(kind: str, *parts: object) -> UUID:
    """A deterministic deadline id, so a replayed reaction sets the same deadline again."""
    return uuid5(_NS, "|".join([kind, *(str(p) for p in parts)]))


# --- events ----------------------------------------------------------------------------


class DeadlineSet(DomainEvent):
    """Something must happen at `due_at` unless the deadline is cancelled first."""

    kind: str
    due_at: datetime
    subjects: tuple[UUID, ...] = ()
    payload: Payload = {}


class DeadlineFired(DomainEvent):
    """A deadline came due; carries what it was set with, so reactions need no lookup."""

    kind: str
    due_at: datetime
    subjects: tuple[UUID, ...] = ()
    payload: Payload = {}


class DeadlineCancelled(DomainEvent):
    """A pending deadline will not fire (its reason to exist is gone)."""

    kind: str
    subjects: tuple[UUID, ...] = ()
    reason: str


# --- state -----------------------------------------------------------------------------


class Deadline(BaseModel):
    """A pending deadline."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    kind: str
    due_at: datetime
    subjects: tuple[UUID, ...] = ()
    payload: Payload = {}
    set_at: datetime


class DeadlineBook(BaseModel):
    """Pending deadlines, plus the ids of recently finished ones (so an id is never reused)."""

    pending: dict[UUID, Deadline] = {}
    # id -> "fired" | "cancelled", oldest first, bounded by FINISHED_KEPT.
    finished: dict[UUID, str] = {}

    def due(self, now: datetime) -> list[Deadline]:
        """Pending deadlines due at `now`, earliest first; ties in the order they were set.

        The order matters under storm control: of ten pages due at once, the first
        incidents opened are the ones that go out (`sorted` is stable, and `pending`
        keeps insertion order, through checkpoints too).
        """
        return sorted((d for d in self.pending.values() if d.due_at <= now), key=lambda d: d.due_at)

    def next_due_at(self) -> datetime | None:
        """When the earliest pending deadline is due, or None."""
        return min((d.due_at for d in self.pending.values()), default=None)

    def about(self, subject: UUID, kind: str | None = None) -> list[Deadline]:
        """Pending deadlines concerning `subject` (optionally of one kind)."""
        return [
            d
            for d in self.pending.values()
            if subject in d.subjects and (kind is None or d.kind == kind)
        ]


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetDeadline:
    """Ask for `kind` to fire at `due_at`."""

    deadline_id: UUID
    kind: str
    due_at: datetime
    subjects: tuple[UUID, ...] = ()
    payload: Payload = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FireDeadline:
    """The timer service found a deadline due."""

    deadline_id: UUID


@dataclass(frozen=True, slots=True)
class CancelDeadline:
    """A pending deadline is no longer needed."""

    deadline_id: UUID
    reason: str
