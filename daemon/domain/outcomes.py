"""Outcome figures folded from the log: how fast people and the agent answered, and whether
what the agent proposed really fixed things. Pure: events in, figures out.

Per incident: time to acknowledge and to resolve (from opening), whether it reopened within
a day after one of its actions succeeded (the action did not really fix it). Per action:
time to approve (from the approval request to the first decision), approved, rejected,
expired, succeeded, verified, rolled back. Per investigation: concluded or escalated.
Each is grouped by service, runbook or severity, within a period.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from daemon.domain.events import DomainEvent

GroupBy = Literal["service", "runbook", "severity", "all"]
REOPEN_AFTER_ACTION = timedelta(days=1)
SERVICE_LABELS = ("service", "job", "app", "alertname")


@dataclass
class _Incident:
    opened_at: datetime
    labels: dict[str, str]
    severity: str = "none"
    runbook: str = ""
    acked_at: datetime | None = None
    resolved_at: datetime | None = None
    action_succeeded_at: datetime | None = None
    reopened_after_action: bool = False


@dataclass
class _Action:
    incident: UUID
    runbook: str
    asked_at: datetime | None = None
    decided_at: datetime | None = None
    marks: set[str] = field(default_factory=set)


@dataclass
class Outcomes:
    """What the fold keeps; feed it events in log order with `apply`."""

    incidents: dict[UUID, _Incident] = field(default_factory=dict)
    actions: dict[UUID, _Action] = field(default_factory=dict)
    investigations: dict[UUID, tuple[UUID, str, str]] = field(default_factory=dict)

    def apply(self, event: DomainEvent) -> None:
        """Fold one event (events of other kinds are ignored)."""
        name = type(event).__name__
        e: Any = event
        at = event.timestamp
        if name == "IncidentOpened":
            self.incidents[e.originator_id] = _Incident(opened_at=at, labels=dict(e.group_labels))
            return
        inc = self.incidents.get(getattr(e, "incident_id", None) or e.originator_id)
        if name == "AlertFired" and inc is not None:
            for k, v in e.alert.labels.items():
                inc.labels.setdefault(k, v)
            if _rank(e.alert.labels.get("severity", "none")) > _rank(inc.severity):
                inc.severity = e.alert.labels.get("severity", "none")
        elif name == "IncidentSeverityChanged" and inc is not None:
            inc.severity = e.severity
        elif name == "IncidentAcknowledged" and inc is not None and inc.acked_at is None:
            inc.acked_at = at
        elif name == "IncidentResolved" and inc is not None and inc.resolved_at is None:
            inc.resolved_at = at
        elif name == "IncidentReopened" and inc is not None:
            done = inc.action_succeeded_at
            if done is not None and at - done <= REOPEN_AFTER_ACTION:
                inc.reopened_after_action = True
        elif name == "InvestigationStarted":
            self.investigations[e.originator_id] = (e.incident_id, e.runbook_id, "started")
            if inc is not None and not inc.runbook:
                inc.runbook = e.runbook_id
        elif name in ("InvestigationConcluded", "InvestigationEscalated"):
            known = self.investigations.get(e.originator_id)
            if known is not None:
                state = "escalated" if name == "InvestigationEscalated" else "concluded"
                # An escalation recorded with its conclusion counts as escalated.
                if known[2] != "escalated":
                    self.investigations[e.originator_id] = (known[0], known[1], state)
        elif name == "ActionProposed":
            self.actions[e.proposal_id] = _Action(incident=e.incident_id, runbook=e.runbook_id)
        else:
            self._action(name, e, at)

    def _action(self, name: str, e: Any, at: datetime) -> None:
        act = self.actions.get(e.originator_id)
        if act is None:
            return
        if name == "ApprovalRequested":
            act.asked_at = at
        elif name in ("ActionApproved", "ActionRejected"):
            act.decided_at = act.decided_at or at
            act.marks.add("approved" if name == "ActionApproved" else "rejected")
        elif name == "ApprovalExpired":
            act.marks.add("expired")
        elif name == "ActionSucceeded":
            act.marks.add("succeeded")
            inc = self.incidents.get(act.incident)
            if inc is not None:
                inc.action_succeeded_at = at
        elif name in ("ActionFailed", "ActionOutcomeUnknown"):
            act.marks.add("failed")
        elif name == "VerificationPassed":
            act.marks.add("verified")
        elif name == "VerificationFailed":
            act.marks.add("verification_failed")
        elif name == "RolledBack":
            act.marks.add("rolled_back")


def _rank(severity: str) -> int:
    return {"critical": 4, "error": 3, "warning": 2, "info": 1}.get(severity, 0)


def fold(events: Iterable[DomainEvent]) -> Outcomes:
    """Outcomes of a whole log (or any ordered part of it)."""
    out = Outcomes()
    for e in events:
        out.apply(e)
    return out


def _key(inc: _Incident | None, runbook: str, by: GroupBy) -> str:
    if by == "all" or (inc is None and by != "runbook"):
        return "all"
    if by == "runbook":
        return runbook or (inc.runbook if inc else "") or "(none)"
    if by == "severity":
        return inc.severity if inc else "none"
    return next((inc.labels[k] for k in SERVICE_LABELS if inc and inc.labels.get(k)), "(none)")


def distribution(values: list[float]) -> dict[str, float | int | None]:
    """Count, mean, median and 90th percentile (nearest rank) of seconds."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": rank(0.5),
        "p90": rank(0.9),
    }


COUNTED = (
    "proposed",
    "approved",
    "rejected",
    "expired",
    "succeeded",
    "failed",
    "verified",
    "verification_failed",
    "rolled_back",
)


def figures(
    outcomes: Outcomes,
    by: GroupBy = "all",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Figures per group for incidents opened (and actions of incidents opened) in the period."""

    def inside(at: datetime) -> bool:
        return (since is None or at >= since) and (until is None or at < until)

    groups: dict[str, dict[str, Any]] = {}

    def group(key: str) -> dict[str, Any]:
        return groups.setdefault(
            key,
            {
                "incidents": 0,
                "ack": [],
                "resolve": [],
                "approve": [],
                "reopened_after_action": 0,
                "investigations": {"concluded": 0, "escalated": 0, "running": 0},
                "actions": dict.fromkeys(COUNTED, 0),
            },
        )

    for inc in outcomes.incidents.values():
        if not inside(inc.opened_at):
            continue
        g = group(_key(inc, "", by))
        g["incidents"] += 1
        if inc.acked_at:
            g["ack"].append((inc.acked_at - inc.opened_at).total_seconds())
        if inc.resolved_at:
            g["resolve"].append((inc.resolved_at - inc.opened_at).total_seconds())
        g["reopened_after_action"] += int(inc.reopened_after_action)
    for inc_id, runbook, state in outcomes.investigations.values():
        run_of = outcomes.incidents.get(inc_id)
        if run_of is None or not inside(run_of.opened_at):
            continue
        bucket = "running" if state == "started" else state
        group(_key(run_of, runbook, by))["investigations"][bucket] += 1
    for act in outcomes.actions.values():
        act_of = outcomes.incidents.get(act.incident)
        if act_of is None or not inside(act_of.opened_at):
            continue
        g = group(_key(act_of, act.runbook, by))
        g["actions"]["proposed"] += 1
        for mark in act.marks:
            g["actions"][mark] += 1
        if act.asked_at and act.decided_at:
            g["approve"].append((act.decided_at - act.asked_at).total_seconds())
    return {
        key: {
            "incidents": g["incidents"],
            "time_to_acknowledge": distribution(g["ack"]),
            "time_to_resolve": distribution(g["resolve"]),
            "time_to_approve": distribution(g["approve"]),
            "investigations": g["investigations"],
            "actions": g["actions"],
            "reopened_within_a_day_after_an_action": g["reopened_after_action"],
        }
        for key, g in sorted(groups.items())
    }
