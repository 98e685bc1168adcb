"""The stored name and schema version of every event type: a contract with every user's log.

An event is stored under a name from this table (`IncidentOpened`, or `IncidentOpened@2`
once its schema has changed), never under its Python path, so modules can move without
making a log unreadable. Logs written before this registry existed stored
`daemon.domain.events:IncidentOpened`; those topics still resolve (`LEGACY_MODULES`).

Schema evolution: when an event type gains, renames or reshapes a field, raise its
`version` here and register an upcaster from the old version. On read, an event stored at
an older version is upcast step by step (v1 -> v2 -> ...) as a JSON object before it is
validated, so the rest of the code only ever sees the current shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.domain import action_model as act
from daemon.domain import events as ev
from daemon.domain import incident_work as work
from daemon.domain import investigation_model as inv
from daemon.domain import lease
from daemon.domain import notification_model as note
from daemon.domain import rule_model as rule
from daemon.domain import situation_model as sit
from daemon.domain import timer_model as timer

# Where each event type lived before stored names existed (topic `module:ClassName`).
LEGACY_MODULES = frozenset(
    {
        "daemon.domain.events",
        "daemon.domain.action_events",
        "daemon.domain.investigation_events",
        "daemon.domain.notifications",
        "daemon.domain.timers",
        "daemon.domain.rule_events",
    }
)

# The checkpoint (a whole folded World as JSON) has a stored format name and version too.
# "watchkeeper:checkpoint" is what version 1 was stored under before the registry.
CHECKPOINT_FORMAT = "checkpoint@1"
CHECKPOINT_FORMATS = frozenset({CHECKPOINT_FORMAT, "watchkeeper:checkpoint"})

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(LookupError):  # noqa: N818 - reads as a condition
    """A stored topic names no registered event type (a log written by a newer version?)."""


@dataclass(frozen=True, slots=True)
class EventType:
    """One stored event type: its name, its class and its current schema version."""

    name: str
    cls: type[ev.DomainEvent]
    version: int = 1

    @property
    def topic(self) -> str:
        """What is stored: the bare name at version 1, `name@N` after."""
        return self.name if self.version == 1 else f"{self.name}@{self.version}"


def _dead_letter_v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """v2 says whether the kept payload was cut: v1 knew it only as size > kept bytes."""
    kept = len(str(state.get("payload", "")).encode())
    return {**state, "truncated": int(state.get("size", 0)) > kept}


def _action_proposed_v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """v2 names the target host; v1 proposals were all run on this host."""
    return {**state, "target": "", "target_source": "proposed before targets existed"}


# Every stored event type. Names are forever: never rename or reuse one.
TYPES: tuple[EventType, ...] = (
    # incidents, silences, intake
    EventType("IncidentOpened", ev.IncidentOpened),
    EventType("AlertFired", ev.AlertFired),
    EventType("AlertUpdated", ev.AlertUpdated),
    EventType("AlertResolved", ev.AlertResolved),
    EventType("AlertSilenced", ev.AlertSilenced),
    EventType("AlertInhibited", ev.AlertInhibited),
    EventType("IncidentAcknowledged", ev.IncidentAcknowledged),
    EventType("IncidentResolved", ev.IncidentResolved),
    EventType("IncidentReopened", ev.IncidentReopened),
    EventType("IncidentClosed", ev.IncidentClosed),
    EventType("SilenceCreated", ev.SilenceCreated),
    EventType("SilenceEnded", ev.SilenceEnded),
    EventType("SilencePurged", ev.SilencePurged),
    EventType("DeadLetterRecorded", ev.DeadLetterRecorded, version=2),
    # incidents worked by people
    EventType("IncidentNoted", work.IncidentNoted),
    EventType("IncidentAssigned", work.IncidentAssigned),
    EventType("IncidentUnacknowledged", work.IncidentUnacknowledged),
    EventType("IncidentSnoozed", work.IncidentSnoozed),
    EventType("IncidentSeverityChanged", work.IncidentSeverityChanged),
    EventType("IncidentLinked", work.IncidentLinked),
    # investigations
    EventType("InvestigationStarted", inv.InvestigationStarted),
    EventType("LLMRequested", inv.LLMRequested),
    EventType("LLMResponded", inv.LLMResponded),
    EventType("LLMFailed", inv.LLMFailed),
    EventType("ToolCalled", inv.ToolCalled),
    EventType("ToolResulted", inv.ToolResulted),
    EventType("ActionProposed", inv.ActionProposed, version=2),
    EventType("ShadowActionProposed", inv.ShadowActionProposed),
    EventType("RunbookPromoted", inv.RunbookPromoted),
    EventType("InvestigationConcluded", inv.InvestigationConcluded),
    EventType("InvestigationEscalated", inv.InvestigationEscalated),
    EventType("InvestigationAbandoned", inv.InvestigationAbandoned),
    EventType("BudgetExhausted", inv.BudgetExhausted),
    # actions
    EventType("PolicyDecided", act.PolicyDecided),
    EventType("ApprovalRequested", act.ApprovalRequested),
    EventType("ApprovalReminded", act.ApprovalReminded),
    EventType("ApprovalExpired", act.ApprovalExpired),
    EventType("ActionApproved", act.ActionApproved),
    EventType("ActionRejected", act.ActionRejected),
    EventType("ActionRequestRefused", act.ActionRequestRefused),
    EventType("DriftChecked", act.DriftChecked),
    EventType("ActionCancelled", act.ActionCancelled),
    EventType("ActionDispatched", act.ActionDispatched),
    EventType("ActionSucceeded", act.ActionSucceeded),
    EventType("ActionFailed", act.ActionFailed),
    EventType("ActionOutcomeUnknown", act.ActionOutcomeUnknown),
    EventType("ActionEscalated", act.ActionEscalated),
    EventType("VerificationPassed", act.VerificationPassed),
    EventType("VerificationFailed", act.VerificationFailed),
    EventType("RollbackDispatched", act.RollbackDispatched),
    EventType("RollbackFailed", act.RollbackFailed),
    EventType("RolledBack", act.RolledBack),
    EventType("ExecutionPaused", act.ExecutionPaused),
    EventType("ExecutionResumed", act.ExecutionResumed),
    EventType("ActionLeaseWaiting", lease.ActionLeaseWaiting),
    # notifications and escalation
    EventType("NotificationSent", note.NotificationSent),
    EventType("NotificationFailed", note.NotificationFailed),
    EventType("NotificationHeld", note.NotificationHeld),
    EventType("NotificationAttempted", note.NotificationAttempted),
    EventType("IncidentEscalated", note.IncidentEscalated),
    # deadlines
    EventType("DeadlineSet", timer.DeadlineSet),
    EventType("DeadlineFired", timer.DeadlineFired),
    EventType("DeadlineCancelled", timer.DeadlineCancelled),
    # metric rules
    EventType("RulesConfigured", rule.RulesConfigured),
    EventType("RulesResumed", rule.RulesResumed),
    EventType("RulePending", rule.RulePending),
    EventType("RulePendingCleared", rule.RulePendingCleared),
    EventType("RuleFiring", rule.RuleFiring),
    EventType("RuleResolved", rule.RuleResolved),
    EventType("SeriesSeen", rule.SeriesSeen),
    EventType("SeriesForgotten", rule.SeriesForgotten),
    # situations
    EventType("SituationOpened", sit.SituationOpened),
    EventType("SituationLinked", sit.SituationLinked),
    EventType("SituationUnlinked", sit.SituationUnlinked),
    EventType("SituationClosed", sit.SituationClosed),
)

# (name, stored version) -> the same event one version later, as a JSON object.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("DeadLetterRecorded", 1): _dead_letter_v1_to_v2,
    ("ActionProposed", 1): _action_proposed_v1_to_v2,
}

BY_NAME: dict[str, EventType] = {t.name: t for t in TYPES}
BY_CLASS: dict[type[ev.DomainEvent], EventType] = {t.cls: t for t in TYPES}


def topic_of(event: ev.DomainEvent) -> str:
    """The stored topic of an event (its registered name and version)."""
    try:
        return BY_CLASS[type(event)].topic
    except KeyError:
        raise UnknownEventType(
            f"{type(event).__name__} has no stored name: add it to daemon/domain/registry.py"
        ) from None


def parse_topic(topic: str) -> tuple[EventType, int]:
    """The registered type and the version a stored topic was written at."""
    if ":" in topic:  # written before the registry: module.path:ClassName, version 1
        module, _, name = topic.rpartition(":")
        if module not in LEGACY_MODULES:
            raise UnknownEventType(f"stored topic {topic!r} is not a known event type")
        version = 1
    else:
        name, _, v = topic.partition("@")
        version = int(v) if v.isdigit() else 1
    kind = BY_NAME.get(name)
    if kind is None or version > kind.version:
        raise UnknownEventType(
            f"stored topic {topic!r} is not a known event type "
            "(was the log written by a newer watchkeeper?)"
        )
    return kind, version


def event_name(topic: str) -> str:
    """The event's name for people (API, exports): `IncidentOpened` for any stored topic."""
    try:
        return parse_topic(topic)[0].name
    except UnknownEventType:
        return topic.rpartition(":")[2].partition("@")[0]


def decode(topic: str, state: bytes) -> ev.DomainEvent:
    """Rebuild a stored event in its current shape, upcasting an older version first."""
    kind, version = parse_topic(topic)
    if version == kind.version:
        return kind.cls.model_validate_json(state)
    data: dict[str, Any] = json.loads(state)
    while version < kind.version:
        data = UPCASTERS[(kind.name, version)](data)
        version += 1
    return kind.cls.model_validate(data)
