"""The life of a proposed action as facts: its events, its entry in the World, its commands.

An action's stream is keyed by the proposal id the investigation gave it. It runs:
PolicyDecided → (ApprovalRequested → ActionApproved… | ActionRejected | ApprovalExpired)
→ DriftChecked → ActionDispatched (idempotency key, recorded before the call) →
ActionSucceeded | ActionFailed | ActionOutcomeUnknown → VerificationPassed |
VerificationFailed → RollbackDispatched → RolledBack | RollbackFailed. ActionEscalated
hands it to a person. The kill switch (ExecutionPaused/Resumed) has a stream of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict

from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import ActionProposed, EvidenceRef, Risk
from daemon.domain.policy import Dispatch, Mode, Outcome, PolicyRules

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/actions")
KILL_SWITCH = uuid5(_NS, "kill-switch")
APPROVAL_DEADLINE = "action-approval"
REMINDER_DEADLINE = "action-reminder"
APPROVER_ROLES = ("approver", "admin")

ActionStatus = Literal[
    "proposed",
    "refused",
    "observed",
    "pending_approval",
    "approved",
    "rejected",
    "expired",
    "cancelled",
    "dispatched",
    "succeeded",
    "failed",
    "unknown",
    "verifying",
    "verified",
    "verification_failed",
    "rolling_back",
    "rolled_back",
    "rollback_failed",
]
FINISHED: frozenset[str] = frozenset(
    {
        "refused",
        "observed",
        "rejected",
        "expired",
        "cancelled",
        "succeeded",
        "failed",
        "unknown",
        "verified",
        "rolled_back",
        "rollback_failed",
    }
)
Channel = Literal["api", "cli", "console", "slack", "policy"]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class ActionPlan(_Value):
    """Exactly what an executor will do: a one-line summary, the targets, and the details."""

    kind: str
    action_id: str
    summary: str
    targets: tuple[str, ...]
    spec: dict[str, Any]
    timeout: float = 60.0
    # The operation in words ("restart"), so rate-limit reasons read naturally.
    verb: str = ""
    # The inventory host it runs on and the transport that reaches it ("" for plans made
    # before targets existed, and for kinds that name their own URL).
    host: str = ""
    transport: str = ""
    address: str = ""


class VerifySpec(_Value):
    """The runbook's verification, rendered for this incident: a query or a probe, in a window."""

    query: str = ""
    probe: str = ""
    expect: str
    window_seconds: float


class Approval(_Value):
    """One person's approval."""

    by: str
    role: str
    channel: str
    at: datetime
    comment: str = ""


# --- events ----------------------------------------------------------------------------


class PolicyDecided(DomainEvent):
    """Policy's verdict on a proposal, with the exact plan an approver is asked to allow."""

    incident_id: UUID
    outcome: Outcome
    mode: Mode
    reasons: tuple[str, ...]
    approvals_required: int = 0
    plan: ActionPlan | None = None
    rollback_plan: ActionPlan | None = None
    rollback_note: str = ""
    verify: VerifySpec | None = None
    labels: dict[str, str] = {}
    evidence_max_age_seconds: float = 300.0
    paused: bool = False


class ApprovalRequested(DomainEvent):
    """A person must approve by `expires_at`; otherwise the action is denied."""

    incident_id: UUID
    expires_at: datetime
    approvals_required: int
    summary: str


class ApprovalReminded(DomainEvent):
    """An approval is still pending and its window closes soon."""

    incident_id: UUID
    expires_at: datetime
    reason: str


class ActionApproved(DomainEvent):
    """A person approved; `approvals` of `required` so far."""

    incident_id: UUID
    by: str
    role: str
    channel: str
    comment: str = ""
    approvals: int
    required: int


class ActionRejected(DomainEvent):
    """A person rejected the action."""

    incident_id: UUID
    by: str
    role: str
    channel: str
    reason: str


class ApprovalExpired(DomainEvent):
    """Nobody approved in time: denied."""

    incident_id: UUID
    expires_at: datetime


class ActionRequestRefused(DomainEvent):
    """An approve/reject/pause request was refused (audit; on a stream of its own)."""

    action: UUID | None = None
    request: str
    by: str
    role: str
    channel: str
    reason: str


class DriftChecked(DomainEvent):
    """The world was checked again right before dispatch."""

    passed: bool
    checks: tuple[str, ...]


class ActionCancelled(DomainEvent):
    """The action will not run (the world changed, or its incident ended)."""

    incident_id: UUID
    reason: str


class ActionDispatched(DomainEvent):
    """Recorded before the executor is called; the key makes the call recognisable."""

    incident_id: UUID
    idempotency_key: str
    plan: ActionPlan


class ActionSucceeded(DomainEvent):
    """The executor reported success."""

    incident_id: UUID
    detail: str
    output: str = ""
    seconds: float = 0.0


class ActionFailed(DomainEvent):
    """The executor reported failure."""

    incident_id: UUID
    reason: str
    output: str = ""
    seconds: float = 0.0


class ActionOutcomeUnknown(DomainEvent):
    """Dispatched, but whether it took effect is unknown (a crash, a timeout); never re-run."""

    incident_id: UUID
    reason: str


class VerificationPassed(DomainEvent):
    """The runbook's verify check held within its window."""

    detail: str
    observed_at: datetime


class VerificationFailed(DomainEvent):
    """The verify check did not hold within its window."""

    reason: str


class RollbackDispatched(DomainEvent):
    """The rollback is about to run (recorded before the call)."""

    incident_id: UUID
    idempotency_key: str
    plan: ActionPlan


class RolledBack(DomainEvent):
    """The rollback ran."""

    incident_id: UUID
    detail: str
    output: str = ""


class RollbackFailed(DomainEvent):
    """The rollback failed, or its outcome is unknown."""

    incident_id: UUID
    reason: str
    output: str = ""


class ActionEscalated(DomainEvent):
    """The action needs a person now (denied, failed, unknown, or verification failed)."""

    incident_id: UUID
    reason: str


class ExecutionPaused(DomainEvent):
    """The kill switch: nothing executes until resumed; approvals still queue."""

    by: str
    reason: str = ""


class ExecutionResumed(DomainEvent):
    """Execution may continue."""

    by: str


# --- state -----------------------------------------------------------------------------


class ActionEntry(BaseModel):
    """What the World keeps of one proposed action."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int = 0
    incident_id: UUID
    investigation_id: UUID
    runbook_id: str
    runbook_version: str
    action_id: str
    kind: str
    risk: Risk
    params: dict[str, Any]
    rationale: str
    evidence: tuple[EvidenceRef, ...] = ()
    proposed_by: str
    proposed_at: datetime
    updated_at: datetime
    target: str = ""
    target_source: str = ""
    status: ActionStatus = "proposed"
    mode: str = ""
    reasons: tuple[str, ...] = ()
    plan: ActionPlan | None = None
    rollback_plan: ActionPlan | None = None
    rollback_note: str = ""
    verify: VerifySpec | None = None
    labels: dict[str, str] = {}
    evidence_max_age_seconds: float = 300.0
    approvals_required: int = 0
    approvals: tuple[Approval, ...] = ()
    expires_at: datetime | None = None
    decided_by: str = ""
    reason: str = ""
    drift: tuple[str, ...] = ()
    idempotency_key: str = ""
    dispatched_at: datetime | None = None
    succeeded_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""
    output: str = ""
    verification: str = ""
    rollback: str = ""
    escalated: str = ""
    # The latest refused requests about this action (audit lines; the events hold all).
    refusals: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Nothing more will happen to this action."""
        return self.status in FINISHED or (
            self.status == "verification_failed" and self.rollback_plan is None
        )


class ActionBook(BaseModel):
    """Actions of hot incidents, a bounded past, recent dispatches, and the kill switch."""

    active: dict[UUID, ActionEntry] = {}
    past: dict[UUID, ActionEntry] = {}
    past_kept: int = 500
    # Recent dispatches, oldest first, for rate limits (bounded by count).
    dispatches: list[Dispatch] = []
    dispatches_kept: int = 5000
    paused: bool = False
    paused_by: str = ""
    paused_at: datetime | None = None
    pause_reason: str = ""
    switch_version: int = 0

    def get(self, action_id: UUID) -> ActionEntry | None:
        """An action by id, hot or past."""
        return self.active.get(action_id) or self.past.get(action_id)

    def for_incident(self, incident_id: UUID) -> list[ActionEntry]:
        """An incident's actions, oldest first."""
        found = [
            a for a in (*self.past.values(), *self.active.values()) if a.incident_id == incident_id
        ]
        return sorted(found, key=lambda a: a.proposed_at)

    def pending(self) -> list[ActionEntry]:
        """Actions waiting for approval, oldest first."""
        return sorted(
            (a for a in self.active.values() if a.status == "pending_approval"),
            key=lambda a: a.proposed_at,
        )

    def record_proposal(self, event: ActionProposed, incident_active: set[UUID]) -> None:
        """Add the entry for a new proposal (called by the ActionProposed state change)."""
        retired = [
            a.id
            for a in self.active.values()
            if a.finished and a.incident_id not in incident_active
        ]
        for aid in retired:
            self.past[aid] = self.active.pop(aid)
        while len(self.past) > self.past_kept:
            del self.past[next(iter(self.past))]
        self.active[event.proposal_id] = ActionEntry(
            id=event.proposal_id,
            incident_id=event.incident_id,
            investigation_id=event.originator_id,
            runbook_id=event.runbook_id,
            runbook_version=event.runbook_version,
            action_id=event.action_id,
            kind=event.kind,
            risk=event.risk,
            params=event.params,
            rationale=event.rationale,
            evidence=event.evidence,
            proposed_by=event.proposed_by,
            target=event.target,
            target_source=event.target_source,
            proposed_at=event.timestamp,
            updated_at=event.timestamp,
        )


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecidePolicy:
    """Apply policy to a proposal, with its plan rendered by the executor (or why it cannot be)."""

    action_id: UUID
    rules: PolicyRules
    plan: ActionPlan | None
    plan_error: str = ""
    rollback_plan: ActionPlan | None = None
    rollback_note: str = ""
    verify: VerifySpec | None = None
    labels: dict[str, str] = field(default_factory=dict)
    evidence_max_age_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class ApproveAction:
    """A person approves (refused unless pending, unexpired, by an approver, not twice)."""

    action_id: UUID
    by: str
    role: str
    channel: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class RejectAction:
    """A person rejects."""

    action_id: UUID
    by: str
    role: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class RecordRefusal:
    """Audit a refused request."""

    record_id: UUID
    action: UUID | None
    request: str
    by: str
    role: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class ExpireApproval:
    """The approval deadline fired."""

    action_id: UUID


@dataclass(frozen=True, slots=True)
class RemindApproval:
    """The reminder deadline fired."""

    action_id: UUID


@dataclass(frozen=True, slots=True)
class CancelAction:
    """Stop an action that has not been dispatched."""

    action_id: UUID
    reason: str


@dataclass(frozen=True, slots=True)
class DispatchAction:
    """Check the world once more and, if it still holds, record the dispatch."""

    action_id: UUID
    rules: PolicyRules
    idempotency_key: str
    # The runbook's precondition re-evaluated now: None when the action has none.
    precondition_held: bool | None = None
    precondition: tuple[str, ...] = ()
    # Problems found outside the pure core (runbook gone or changed, plan now disallowed).
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What the executor reported for the action or, with `rollback`, for its rollback."""

    action_id: UUID
    outcome: Literal["succeeded", "failed", "unknown"]
    detail: str
    output: str = ""
    seconds: float = 0.0
    rollback: bool = False


@dataclass(frozen=True, slots=True)
class RecordVerification:
    """The verify check held, or did not within its window."""

    action_id: UUID
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DispatchRollback:
    """Record that the rollback is about to run."""

    action_id: UUID
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class MarkOutcomeUnknown:
    """After a restart: a dispatch (or rollback) with no recorded outcome."""

    action_id: UUID
    reason: str


@dataclass(frozen=True, slots=True)
class PauseExecution:
    """Engage the kill switch."""

    by: str
    role: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ResumeExecution:
    """Release the kill switch."""

    by: str
    role: str


ActionCommand = (
    DecidePolicy
    | ApproveAction
    | RejectAction
    | RecordRefusal
    | ExpireApproval
    | RemindApproval
    | CancelAction
    | DispatchAction
    | RecordOutcome
    | RecordVerification
    | DispatchRollback
    | MarkOutcomeUnknown
    | PauseExecution
    | ResumeExecution
)
