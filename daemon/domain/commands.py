"""Inputs to `decide`: what arrived, or what a person asked for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from daemon.domain.action_model import ActionCommand
from daemon.domain.alert_model import Alert
from daemon.domain.investigation_model import InvestigationCommand
from daemon.domain.matchers import Matcher
from daemon.domain.notification_model import (
    Escalate,
    RecordAttempt,
    RecordFailed,
    RecordHeld,
    RecordSent,
)
from daemon.domain.rule_model import ConfigureRules, ObserveQueryResult, ObserveSamples
from daemon.domain.situation_model import SituationCommand
from daemon.domain.timer_model import CancelDeadline, FireDeadline, SetDeadline


@dataclass(frozen=True, slots=True)
class ReceiveAlert:
    """An alert arrived from a source (already normalized, lease computed)."""

    alert: Alert


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: expire leases, close incidents, end silences."""


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A person takes an incident."""

    incident_id: UUID
    by: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ResolveIncident:
    """A person declares an incident over."""

    incident_id: UUID
    by: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class CreateSilence:
    """A person mutes alerts matching all matchers within a window."""

    silence_id: UUID
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    by: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class EndSilence:
    """A person removes a silence before it expires."""

    silence_id: UUID
    by: str


@dataclass(frozen=True, slots=True)
class RecordDeadLetter:
    """Input that could not be accepted is kept with the reason."""

    record_id: UUID
    source: str
    reason: str
    payload: str
    size: int


Command = (
    ReceiveAlert
    | Tick
    | Acknowledge
    | ResolveIncident
    | CreateSilence
    | EndSilence
    | RecordDeadLetter
    | SetDeadline
    | FireDeadline
    | CancelDeadline
    | Escalate
    | RecordAttempt
    | RecordSent
    | RecordFailed
    | RecordHeld
    | InvestigationCommand
    | ActionCommand
    | ObserveSamples
    | ObserveQueryResult
    | ConfigureRules
    | SituationCommand
)


class Rejected(Exception):  # noqa: N818 - a decision, not a failure
    """A command that current state refuses; the message says why, for the person who asked."""

    def __init__(self, reason: str, status: int = 409) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
