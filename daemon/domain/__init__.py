"""The pure core: alerts, incidents, silences as events, `decide` and `evolve`. No I/O here."""

from daemon.domain.alert_model import Alert, fingerprint
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

# Imported for their side effect, after the names above exist: each registers its
# decisions and state changes with `decide`/`evolve`: deadlines, escalation steps and
# notification records (notification_decide, timer_decide); the Investigation aggregate
# (investigation_decide); metric-rule samples, query results and absence on Tick
# (rule_decide); proposed actions, approvals, dispatch and the kill switch (action_decide);
# correlation of incidents into situations and links by hand (situation_decide).
# notes, owners, snoozes, manual reopen and severity (incident_work).
from daemon.domain import (  # noqa: F401
    action_decide,
    incident_work,
    investigation_decide,
    notification_decide,
    rule_decide,
    situation_decide,
    timer_decide,
)
