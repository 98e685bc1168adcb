"""The Investigation aggregate's facts: its events, its compact state in the World, its commands.

One investigation is one run of one runbook for one incident. Its stream holds every step:
the requests to and responses from the model, every tool call and result, proposals, and
how it ended. The World keeps only a compact entity per investigation (counters, budget,
the runbook's action catalogue, the conclusion); the full record stays in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict

from daemon.domain.events import DomainEvent

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/investigations")

Mode = Literal["llm", "deterministic"]
Risk = Literal["low", "medium", "high"]
ToolStatus = Literal["ok", "error", "no_data", "refused"]
InvestigationStatus = Literal["queued", "running", "concluded", "abandoned"]
Fact = float | int | str | bool | None


def investigation_id_for(incident_id: UUID, runbook_id: str, run: int) -> UUID:
    """Deterministic id: one incident, one runbook, one numbered run."""
    return uuid5(_NS, f"investigation|{incident_id}|{runbook_id}|{run}")


def proposal_id_for(investigation_id: UUID, call_id: str) -> UUID:
    """Deterministic id of the action a tool call proposed (the actions stream's id)."""
    return uuid5(_NS, f"proposal|{investigation_id}|{call_id}")


# --- values carried by events -----------------------------------------------------------


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class Budget(_Value):
    """Limits of one investigation."""

    steps: int = 8
    tokens: int = 60_000
    wall_seconds: float = 600.0
    max_repeats: int = 2


class ActionSpec(_Value):
    """One action a runbook allows: what kind, how risky, which parameters are valid."""

    id: str
    kind: str
    title: str = ""
    risk: Risk
    params_schema: dict[str, Any]
    rollback: str = ""


class Usage(_Value):
    """Token usage of one model call (or a sum of them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ToolCallSpec(_Value):
    """A tool call as the model asked for it (arguments are its raw JSON text)."""

    id: str
    name: str
    arguments: str


class EvidenceRef(_Value):
    """A tool result a conclusion or proposal cites, with enough to read it on its own."""

    call_id: str
    tool: str
    summary: str
    observed_at: datetime | None = None
    blob: str = ""


class ProposalRef(_Value):
    """A proposed action as the incident view shows it."""

    proposal_id: UUID
    action_id: str
    kind: str
    risk: Risk
    params: dict[str, Any]
    rationale: str


# --- events ----------------------------------------------------------------------------


class InvestigationStarted(DomainEvent):
    """An incident was routed to a runbook; the run is queued for the agent."""

    incident_id: UUID
    run: int
    runbook_id: str
    runbook_version: str
    mode: Mode
    model: str
    prompt_hash: str
    budget: Budget
    actions: tuple[ActionSpec, ...]
    severity: str
    incident_opened_at: datetime
    # The incident as it was at the start (labels, annotations: untrusted data).
    context: dict[str, Any]
    # A shadow run tries a candidate runbook version next to the active one: it
    # investigates and proposes, but its proposals are ShadowActionProposed, never executed.
    shadow: bool = False


class LLMRequested(DomainEvent):
    """About to call the model for `step` (recorded before the call)."""

    step: int
    final: bool = False
    prompt_hash: str
    messages: int
    tools: tuple[str, ...] = ()


class LLMResponded(DomainEvent):
    """The model answered `step`: its message, tool calls, token usage and estimated cost."""

    step: int
    message: str
    tool_calls: tuple[ToolCallSpec, ...] = ()
    usage: Usage
    cost: float
    model: str
    finish_reason: str = ""
    seconds: float = 0.0


class LLMFailed(DomainEvent):
    """The model call for `step` failed after the client's retries."""

    step: int
    error: str


class ToolCalled(DomainEvent):
    """A tool is about to run with these (validated) arguments."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    step: int


class ToolResulted(DomainEvent):
    """A tool's result, observed at `observed_at`; large payloads live in a blob by hash."""

    call_id: str
    tool: str
    status: ToolStatus
    observed_at: datetime
    summary: str
    facts: dict[str, Fact] = {}
    payload: Any = None
    blob: str = ""
    size: int = 0


class ActionProposed(DomainEvent):
    """The investigation proposes one of its runbook's actions (the actions stage decides)."""

    proposal_id: UUID
    incident_id: UUID
    runbook_id: str
    runbook_version: str
    action_id: str
    kind: str
    params: dict[str, Any]
    risk: Risk
    rationale: str
    evidence: tuple[EvidenceRef, ...] = ()
    rollback: str = ""
    call_id: str
    proposed_by: str
    # The host the action is about (version 2): derived from the alert's labels or set by
    # the runbook; "" when nothing named one (then it means this host), and how it was found.
    target: str = ""
    target_source: str = ""


class ShadowActionProposed(DomainEvent):
    """A shadow run's proposal: recorded for comparison with what people approved and what
    worked, never handed to the actions stage (a separate type, so nothing executes it)."""

    proposal_id: UUID
    incident_id: UUID
    runbook_id: str
    runbook_version: str
    action_id: str
    kind: str
    params: dict[str, Any]
    risk: Risk
    rationale: str
    evidence: tuple[EvidenceRef, ...] = ()
    call_id: str
    proposed_by: str


class RunbookPromoted(DomainEvent):
    """A person promoted a runbook version (tried in shadow) to be the active one."""

    runbook_id: str
    version: str
    previous_version: str = ""
    by: str
    reason: str


class BudgetExhausted(DomainEvent):
    """A limit was reached (steps, tokens, wall_time, repetition): one final call, then stop."""

    limit: str
    detail: str


class InvestigationConcluded(DomainEvent):
    """The investigation's conclusion: what is wrong, why, on what evidence, what to do."""

    summary: str
    probable_cause: str = ""
    evidence: tuple[EvidenceRef, ...] = ()
    proposals: tuple[UUID, ...] = ()
    concluded_by: str


class InvestigationEscalated(DomainEvent):
    """The investigation could not finish on its own; a person must look."""

    incident_id: UUID
    reason: str


class InvestigationAbandoned(DomainEvent):
    """The investigation stopped without a conclusion (e.g. the incident resolved)."""

    reason: str


INVESTIGATION_EVENTS = (
    InvestigationStarted,
    LLMRequested,
    LLMResponded,
    LLMFailed,
    ToolCalled,
    ToolResulted,
    ActionProposed,
    ShadowActionProposed,
    BudgetExhausted,
    InvestigationConcluded,
    InvestigationEscalated,
    InvestigationAbandoned,
)


# --- the compact entity kept in the World ----------------------------------------------


class Investigation(BaseModel):
    """What the World keeps of one investigation: enough to decide, queue and show it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    incident_id: UUID
    run: int
    runbook_id: str
    runbook_version: str
    mode: Mode
    model: str
    status: InvestigationStatus = "queued"
    severity: str = "none"
    incident_opened_at: datetime
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    budget: Budget
    actions: tuple[ActionSpec, ...] = ()
    llm_calls: int = 0
    tool_calls: int = 0
    usage: Usage = Usage()
    cost: float = 0.0
    awaiting_step: int | None = None
    exhausted: str = ""
    proposals: tuple[ProposalRef, ...] = ()
    summary: str = ""
    probable_cause: str = ""
    evidence: tuple[EvidenceRef, ...] = ()
    escalated: str = ""
    shadow: bool = False

    @property
    def finished(self) -> bool:
        """Concluded or abandoned: nothing more will be recorded."""
        return self.status in ("concluded", "abandoned")

    def action(self, action_id: str) -> ActionSpec | None:
        """The runbook action with this id, if the runbook allows it."""
        return next((a for a in self.actions if a.id == action_id), None)


class Investigations(BaseModel):
    """Investigations in the hot set, plus a bounded record of finished ones.

    Finished investigations of incidents that left the hot set move to `past` (oldest
    dropped beyond `past_kept`), so memory stays flat over days.
    """

    active: dict[UUID, Investigation] = {}
    past: dict[UUID, Investigation] = {}
    past_kept: int = 500
    # Runbook id -> the version a person promoted last, and that stream's version.
    promoted: dict[str, str] = {}
    promotion_versions: dict[str, int] = {}

    def get(self, investigation_id: UUID) -> Investigation | None:
        """An investigation by id, hot or past."""
        return self.active.get(investigation_id) or self.past.get(investigation_id)

    def for_incident(self, incident_id: UUID) -> list[Investigation]:
        """Every known run for an incident, oldest first."""
        runs = [
            i for i in (*self.past.values(), *self.active.values()) if i.incident_id == incident_id
        ]
        return sorted(runs, key=lambda i: (i.started_at, i.run, i.runbook_id))


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartInvestigation:
    """Route result: start (queue) a run of a runbook for an incident."""

    investigation_id: UUID
    incident_id: UUID
    run: int
    runbook_id: str
    runbook_version: str
    mode: Mode
    model: str
    prompt_hash: str
    budget: Budget
    actions: tuple[ActionSpec, ...]
    context: dict[str, Any] = field(default_factory=dict)
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class RecordLLMRequest:
    """Record that the model is about to be called for `step`."""

    investigation_id: UUID
    expected_version: int
    step: int
    prompt_hash: str
    messages: int
    tools: tuple[str, ...] = ()
    final: bool = False


@dataclass(frozen=True, slots=True)
class RecordLLMResponse:
    """Record the model's answer to `step`."""

    investigation_id: UUID
    expected_version: int
    step: int
    message: str
    tool_calls: tuple[ToolCallSpec, ...]
    usage: Usage
    cost: float
    model: str
    finish_reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordLLMFailure:
    """Record that the model call for `step` failed."""

    investigation_id: UUID
    expected_version: int
    step: int
    error: str


@dataclass(frozen=True, slots=True)
class RecordToolCall:
    """Record that a tool is about to run."""

    investigation_id: UUID
    expected_version: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    step: int


@dataclass(frozen=True, slots=True)
class RecordToolResult:
    """Record a tool's result."""

    investigation_id: UUID
    expected_version: int
    call_id: str
    tool: str
    status: ToolStatus
    observed_at: datetime
    summary: str
    facts: dict[str, Fact] = field(default_factory=dict)
    payload: Any = None
    blob: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class ProposeAction:
    """Propose one of the runbook's actions; refused unless allowed and params validate."""

    investigation_id: UUID
    expected_version: int
    call_id: str
    action_id: str
    params: dict[str, Any]
    rationale: str
    evidence: tuple[EvidenceRef, ...] = ()
    proposed_by: str = "agent"
    target: str = ""
    target_source: str = ""


@dataclass(frozen=True, slots=True)
class ExhaustBudget:
    """Record that a limit was reached."""

    investigation_id: UUID
    expected_version: int
    limit: str
    detail: str


@dataclass(frozen=True, slots=True)
class ConcludeInvestigation:
    """Conclude; with `escalate` set, also hand the incident to a person."""

    investigation_id: UUID
    expected_version: int
    summary: str
    probable_cause: str
    evidence: tuple[EvidenceRef, ...]
    concluded_by: str
    escalate: str = ""


@dataclass(frozen=True, slots=True)
class AbandonInvestigation:
    """Stop without a conclusion."""

    investigation_id: UUID
    expected_version: int
    reason: str


@dataclass(frozen=True, slots=True)
class PromoteRunbook:
    """A person promotes a runbook version that ran in shadow (recorded, never automatic)."""

    runbook_id: str
    version: str
    previous_version: str
    by: str
    role: str
    reason: str


def runbook_stream_id(runbook_id: str) -> UUID:
    """The stream of a runbook's promotions."""
    return uuid5(_NS, f"runbook|{runbook_id}")


InvestigationCommand = (
    PromoteRunbook
    | StartInvestigation
    | RecordLLMRequest
    | RecordLLMResponse
    | RecordLLMFailure
    | RecordToolCall
    | RecordToolResult
    | ProposeAction
    | ExhaustBudget
    | ConcludeInvestigation
    | AbandonInvestigation
)
