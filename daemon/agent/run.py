"""An investigation folded from its own event stream: every step, call and result in order.

The World keeps a compact entity; this is the full record the loop decides from and the
prompt is rebuilt from. Folding is deterministic, so after a restart the loop finds exactly
what was recorded: a model step with a recorded response is never asked again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import (
    ActionProposed,
    BudgetExhausted,
    Fact,
    InvestigationAbandoned,
    InvestigationConcluded,
    InvestigationEscalated,
    InvestigationStarted,
    LLMFailed,
    LLMRequested,
    LLMResponded,
    ShadowActionProposed,
    ToolCalled,
    ToolResulted,
    Usage,
)


@dataclass
class Call:
    """One tool call, asked for by the model or a runbook diagnostic; maybe run, maybe answered."""

    call_id: str
    tool: str
    raw_arguments: str
    step: int
    wire_id: str = ""
    called: ToolCalled | None = None
    result: ToolResulted | None = None

    @property
    def answered(self) -> bool:
        """Whether a result (of any status) is recorded."""
        return self.result is not None

    def arguments(self) -> dict[str, Any]:
        """The arguments as a mapping (an unparseable string yields {})."""
        if self.called is not None:
            return self.called.arguments
        try:
            value = json.loads(self.raw_arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class Step:
    """One model step: its request(s), and its response or failure."""

    step: int
    final: bool
    requested: LLMRequested
    response: LLMResponded | None = None
    failure: LLMFailed | None = None


@dataclass
class InvestigationRun:
    """The folded stream of one investigation."""

    id: UUID
    started: InvestigationStarted
    version: int = 1
    steps: list[Step] = field(default_factory=list)
    calls: dict[str, Call] = field(default_factory=dict)
    proposals: list[ActionProposed | ShadowActionProposed] = field(default_factory=list)
    exhausted: BudgetExhausted | None = None
    concluded: InvestigationConcluded | None = None
    escalated: InvestigationEscalated | None = None
    abandoned: InvestigationAbandoned | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    failures_in_row: int = 0
    last_error: str = ""
    began_at: datetime | None = None

    # --- folding -------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        """Fold one event of this investigation's stream."""
        self.version = event.originator_version
        if isinstance(event, LLMRequested | ToolCalled) and self.began_at is None:
            self.began_at = event.timestamp
        if isinstance(event, LLMRequested):
            current = self.step(event.step)
            if current is None:
                self.steps.append(Step(event.step, event.final, event))
            else:
                # A re-issued request after a crash or a failure: same step, new attempt.
                current.requested, current.failure = event, None
        elif isinstance(event, LLMResponded):
            st = self.step(event.step)
            if st is not None:
                st.response = event
            self.usage = self.usage + event.usage
            self.cost += event.cost
            self.failures_in_row = 0
            for i, tc in enumerate(event.tool_calls):
                cid = f"s{event.step}-{i}"
                self.calls[cid] = Call(cid, tc.name, tc.arguments, event.step, wire_id=tc.id)
        elif isinstance(event, LLMFailed):
            st = self.step(event.step)
            if st is not None:
                st.failure = event
            self.failures_in_row += 1
            self.last_error = event.error
        elif isinstance(event, ToolCalled):
            call = self.calls.get(event.call_id)
            if call is None:
                call = Call(event.call_id, event.tool, json.dumps(event.arguments), event.step)
                self.calls[event.call_id] = call
            call.called = event
        elif isinstance(event, ToolResulted):
            call = self.calls.get(event.call_id)
            if call is None:
                call = Call(event.call_id, event.tool, "{}", 0)
                self.calls[event.call_id] = call
            call.result = event
        elif isinstance(event, ActionProposed | ShadowActionProposed):
            self.proposals.append(event)
        elif isinstance(event, BudgetExhausted):
            self.exhausted = event
        elif isinstance(event, InvestigationConcluded):
            self.concluded = event
        elif isinstance(event, InvestigationEscalated):
            self.escalated = event
        elif isinstance(event, InvestigationAbandoned):
            self.abandoned = event

    # --- reading -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Concluded or abandoned."""
        return self.concluded is not None or self.abandoned is not None

    def step(self, number: int) -> Step | None:
        """A step by number."""
        return next((s for s in self.steps if s.step == number), None)

    @property
    def awaiting(self) -> Step | None:
        """A step whose request is recorded but has neither a response nor a failure."""
        return next((s for s in self.steps if s.response is None and s.failure is None), None)

    @property
    def responded(self) -> list[Step]:
        """Steps with a recorded response, in order."""
        return [s for s in self.steps if s.response is not None]

    @property
    def next_step_number(self) -> int:
        """The number the next new model step gets."""
        return max((s.step for s in self.steps), default=0) + 1

    @property
    def open_calls(self) -> list[Call]:
        """Calls asked for but not answered, in order."""
        return [c for c in self.calls.values() if not c.answered]

    def facts(self) -> dict[str, dict[str, Fact]]:
        """Facts of answered diagnostics (call ids `d-<id>`) by diagnostic id, with status."""
        out: dict[str, dict[str, Fact]] = {}
        for cid, call in self.calls.items():
            if cid.startswith("d-") and call.result is not None:
                facts: dict[str, Fact] = dict(call.result.facts)
                facts["status"] = call.result.status
                out[cid[2:]] = facts
        return out

    @property
    def labels(self) -> dict[str, str]:
        """The incident's common labels as recorded at the start."""
        labels = self.started.context.get("labels", {})
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def fold(events: list[DomainEvent]) -> InvestigationRun:
    """Fold a whole stream (it must start with InvestigationStarted)."""
    if not events or not isinstance(events[0], InvestigationStarted):
        raise ValueError("an investigation stream starts with InvestigationStarted")
    run = InvestigationRun(id=events[0].originator_id, started=events[0])
    for e in events[1:]:
        run.apply(e)
    return run
