"""An incident's timeline for the console: its own events, its investigations' and actions'.

Each event becomes one row: when, which stream, what happened in a line, and detail (a
tool's output summary, a plan, drift checks) shown below it. Everything here is text the
templates escape; alert labels and model output are untrusted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.domain.events import DomainEvent

DETAIL_CHARS = 4000


@dataclass(frozen=True)
class Row:
    """One line of the timeline."""

    at: datetime
    stream: str
    kind: str
    text: str
    detail: str = ""
    observed_at: datetime | None = None


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _cut(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "…"


# What a policy outcome means for the person reading the timeline.
_OUTCOME_WORDS = {
    "execute": "runs without approval",
    "approve": "needs approval",
    "refuse": "refused",
    "observe": "recorded only (observe mode)",
}

Describe = Callable[[Any], tuple[str, str]]
_DESCRIBE: dict[str, Describe] = {
    "IncidentOpened": lambda e: (f"Incident opened for {e.group_key}", ""),
    "AlertFired": lambda e: (
        f"Alert {e.alert.labels.get('alertname', e.alert.fingerprint)} fired",
        f"labels: {_labels(e.alert.labels)}\nannotations: {_j(e.alert.annotations)}",
    ),
    "AlertUpdated": lambda e: (f"Alert {e.fingerprint} updated", _j(e.annotations)),
    "AlertResolved": lambda e: (f"Alert {e.fingerprint} resolved: {e.reason}", ""),
    "IncidentAcknowledged": lambda e: (f"Acknowledged by {e.by}", e.comment),
    "IncidentResolved": lambda e: (f"Incident resolved: {e.reason}", ""),
    "IncidentReopened": lambda e: (f"Incident reopened: {e.reason}", ""),
    "IncidentNoted": lambda e: (f"Note by {e.by} via {e.channel}", e.text),
    "IncidentAssigned": lambda e: (
        (f"Assigned to {e.assignee}" if e.assignee else "Unassigned")
        + f" by {e.by} via {e.channel}",
        f"was {e.previous}" if e.previous else "",
    ),
    "IncidentUnacknowledged": lambda e: (
        f"Unacknowledged by {e.by} via {e.channel} (was {e.previous})", e.reason
    ),
    "IncidentSnoozed": lambda e: (
        f"Escalation snoozed until {e.until.isoformat(timespec='minutes')} by {e.by}", e.reason
    ),
    "IncidentLinked": lambda e: (
        f"Linked to incident {e.other} by {e.by} via {e.channel}", e.reason
    ),
    "IncidentSeverityChanged": lambda e: (
        f"Severity {e.previous} → {e.severity} by {e.by} via {e.channel}", e.reason
    ),
    "IncidentClosed": lambda e: (f"Incident closed: {e.reason}", ""),
    "IncidentEscalated": lambda e: (
        f"Escalated: policy {e.policy} level {e.level + 1} → {', '.join(e.channels)}",
        "",
    ),
    "InvestigationStarted": lambda e: (
        f"Investigation run {e.run}: runbook {e.runbook_id} v{e.runbook_version} ({e.mode}"
        + (f", {e.model}" if e.model else "")
        + ")",
        "",
    ),
    "LLMRequested": lambda e: (f"Model asked (step {e.step}{', final' if e.final else ''})", ""),
    "LLMResponded": lambda e: (
        f"Model answered step {e.step}"
        + (f": calls {', '.join(c.name for c in e.tool_calls)}" if e.tool_calls else ""),
        e.message,
    ),
    "LLMFailed": lambda e: (f"Model call failed (step {e.step})", e.error),
    "ToolCalled": lambda e: (f"Tool {e.tool} called ({e.call_id})", _j(e.arguments)),
    "ToolResulted": lambda e: (f"Tool {e.tool} [{e.status}] ({e.call_id})", e.summary),
    "ActionProposed": lambda e: (
        f"Proposed {e.action_id} ({e.kind}, {e.risk} risk) with {_j(e.params)}",
        e.rationale,
    ),
    "BudgetExhausted": lambda e: (f"Budget exhausted: {e.limit}", e.detail),
    "InvestigationConcluded": lambda e: (
        "Investigation concluded" + (f": {e.probable_cause}" if e.probable_cause else ""),
        e.summary,
    ),
    "InvestigationEscalated": lambda e: (f"Investigation escalated: {e.reason}", ""),
    "InvestigationAbandoned": lambda e: (f"Investigation abandoned: {e.reason}", ""),
    "PolicyDecided": lambda e: (
        f"Policy ({e.mode}): {_OUTCOME_WORDS.get(e.outcome, e.outcome)}",
        "\n".join(e.reasons) + (f"\nwill run: {e.plan.summary}" if e.plan else ""),
    ),
    "ApprovalRequested": lambda e: (
        f"Approval requested ({e.approvals_required} needed, expires "
        f"{e.expires_at.isoformat(timespec='seconds')})",
        e.summary,
    ),
    "ApprovalReminded": lambda e: ("Approval reminder", e.reason),
    "ActionApproved": lambda e: (
        f"Approved by {e.by} ({e.role}) via {e.channel} [{e.approvals}/{e.required}]",
        e.comment,
    ),
    "ActionRejected": lambda e: (f"Rejected by {e.by} via {e.channel}", e.reason),
    "ApprovalExpired": lambda e: ("Approval expired: denied", ""),
    "ActionRequestRefused": lambda e: (f"Refused {e.request} by {e.by} ({e.role})", e.reason),
    "DriftChecked": lambda e: (
        f"Drift check {'passed' if e.passed else 'FAILED'}", "\n".join(e.checks)
    ),
    "ActionCancelled": lambda e: ("Action cancelled", e.reason),
    "ActionDispatched": lambda e: (
        f"Dispatched (key {e.idempotency_key})", e.plan.summary
    ),
    "ActionSucceeded": lambda e: (f"Action succeeded: {e.detail}", e.output),
    "ActionFailed": lambda e: (f"Action failed: {e.reason}", e.output),
    "ActionOutcomeUnknown": lambda e: ("Action outcome UNKNOWN", e.reason),
    "VerificationPassed": lambda e: ("Verification passed", e.detail),
    "VerificationFailed": lambda e: ("Verification failed", e.reason),
    "RollbackDispatched": lambda e: (
        f"Rollback dispatched (key {e.idempotency_key})", e.plan.summary
    ),
    "RolledBack": lambda e: (f"Rolled back: {e.detail}", e.output),
    "RollbackFailed": lambda e: (f"Rollback failed: {e.reason}", e.output),
    "ActionEscalated": lambda e: ("Handed to a person", e.reason),
    "ActionLeaseWaiting": lambda e: (
        f"Waiting for {e.target} until {e.until.isoformat(timespec='seconds')}", e.holder
    ),
    "SituationOpened": lambda e: (f"Situation opened ({e.rule})", e.reason),
    "SituationLinked": lambda e: (
        f"Incident {e.incident_id} linked ({e.rule}{' by ' + e.by if e.by else ''})", e.reason
    ),
    "SituationUnlinked": lambda e: (
        f"Incident {e.incident_id} unlinked{' by ' + e.by if e.by else ''}", e.reason
    ),
    "SituationClosed": lambda e: (f"Situation closed: {e.reason}", ""),
}


def row(stream: str, event: DomainEvent) -> Row:
    """The timeline row for one event."""
    name = type(event).__name__
    describe = _DESCRIBE.get(name)
    if describe is None:
        data = event.model_dump(
            mode="json", exclude={"originator_id", "originator_version", "timestamp"}
        )
        text, detail = name, _j(data)
    else:
        text, detail = describe(event)
    return Row(
        at=event.timestamp,
        stream=stream,
        kind=name,
        text=text,
        detail=_cut(detail or ""),
        observed_at=getattr(event, "observed_at", None),
    )


def timeline(streams: list[tuple[str, list[DomainEvent]]]) -> list[Row]:
    """Rows of several streams merged in time order (a stream's own order kept on ties)."""
    rows = [row(name, ev) for name, events in streams for ev in events]
    return sorted(rows, key=lambda r: r.at)
