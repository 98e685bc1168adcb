"""The pure core: alerts, incidents, silences as events, `decide` and `evolve`. No I/O here."""

from daemon.domain.alerts import Alert, fingerprint
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
from daemon.domain.decide import decide
from daemon.domain.events import DomainEvent
from daemon.domain.evolve import evolve
from daemon.domain.matchers import Matcher
from daemon.domain.state import GroupingPolicy, Incident, Silence, World

__all__ = [
    "Acknowledge",
    "Alert",
    "Command",
    "CreateSilence",
    "DomainEvent",
    "EndSilence",
    "GroupingPolicy",
    "Incident",
    "Matcher",
    "ReceiveAlert",
    "RecordDeadLetter",
    "Rejected",
    "ResolveIncident",
    "Silence",
    "Tick",
    "World",
    "decide",
    "evolve",
    "fingerprint",
]
