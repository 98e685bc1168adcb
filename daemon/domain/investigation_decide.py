"""Decisions and state changes of the Investigation aggregate (registered with `decide`/`evolve`).

Every command carries the version its writer last saw; a stale command is refused, so a
step can never be recorded twice. `ProposeAction` is the one gate for change: only the
runbook's actions, only with parameters valid against the action's schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from daemon.domain.commands import Rejected
from daemon.domain.decide import _decide, _Out, emit_one
from daemon.domain.events import DomainEvent, first_of, next_of, stamp
from daemon.domain.evolve import evolve
from daemon.domain.investigation_model import (
    AbandonInvestigation,
    ActionProposed,
    ActionSpec,
    BudgetExhausted,
    ConcludeInvestigation,
    ExhaustBudget,
    Investigation,
    InvestigationAbandoned,
    InvestigationConcluded,
    InvestigationEscalated,
    InvestigationStarted,
    LLMFailed,
    LLMRequested,
    LLMResponded,
    PromoteRunbook,
    ProposalRef,
    ProposeAction,
    RecordLLMFailure,
    RecordLLMRequest,
    RecordLLMResponse,
    RecordToolCall,
    RecordToolResult,
    RunbookPromoted,
    ShadowActionProposed,
    StartInvestigation,
    ToolCalled,
    ToolResulted,
    proposal_id_for,
    runbook_stream_id,
)
from daemon.domain.param_schema import ParamsValidator
from daemon.domain.state import World


def params_problems(schema: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Every way `params` fails `schema`, as `path: reason` lines (empty when valid)."""
    problems = []
    for err in sorted(ParamsValidator(schema).iter_errors(params), key=str):
        where = ".".join(str(p) for p in err.absolute_path) or "params"
        problems.append(f"{where}: {err.message}")
    return problems


def _live(world: World, investigation_id: UUID, expected_version: int) -> Investigation:
    inv = world.investigations.active.get(investigation_id)
    if inv is None:
        raise Rejected(f"no investigation {investigation_id} in the hot set", 404)
    if inv.finished:
        raise Rejected(f"investigation {investigation_id} is already {inv.status}")
    if inv.version != expected_version:
        raise Rejected(
            f"investigation {investigation_id} is at version {inv.version}, "
            f"not {expected_version}: the step was already recorded"
        )
    return inv


@_decide.register
def _(cmd: StartInvestigation, world: World, now: datetime) -> list[DomainEvent]:
    inc = world.incidents.get(cmd.incident_id)
    if inc is None or not inc.is_active:
        raise Rejected(f"incident {cmd.incident_id} is not open; nothing to investigate")
    if world.investigations.get(cmd.investigation_id) is not None:
        raise Rejected(f"investigation {cmd.investigation_id} already started")
    out = _Out(world, now)
    out.emit(
        InvestigationStarted(
            **first_of(cmd.investigation_id, now),
            incident_id=cmd.incident_id,
            run=cmd.run,
            runbook_id=cmd.runbook_id,
            runbook_version=cmd.runbook_version,
            mode=cmd.mode,
            model=cmd.model,
            prompt_hash=cmd.prompt_hash,
            budget=cmd.budget,
            actions=cmd.actions,
            severity=inc.severity,
            incident_opened_at=inc.opened_at,
            context=cmd.context,
            shadow=cmd.shadow,
        )
    )
    return out.events


@_decide.register
def _(cmd: RecordLLMRequest, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    if inv.awaiting_step is not None and inv.awaiting_step != cmd.step:
        raise Rejected(f"step {inv.awaiting_step} is still awaiting its response")
    return emit_one(
        world,
        LLMRequested(
            **next_of(inv, now),
            step=cmd.step,
            final=cmd.final,
            prompt_hash=cmd.prompt_hash,
            messages=cmd.messages,
            tools=cmd.tools,
        ),
    )


@_decide.register
def _(cmd: RecordLLMResponse, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    if inv.awaiting_step != cmd.step:
        raise Rejected(f"no request recorded for step {cmd.step}")
    return emit_one(
        world,
        LLMResponded(
            **next_of(inv, now),
            step=cmd.step,
            message=cmd.message,
            tool_calls=cmd.tool_calls,
            usage=cmd.usage,
            cost=cmd.cost,
            model=cmd.model,
            finish_reason=cmd.finish_reason,
            seconds=cmd.seconds,
        ),
    )


@_decide.register
def _(cmd: RecordLLMFailure, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    if inv.awaiting_step != cmd.step:
        raise Rejected(f"no request recorded for step {cmd.step}")
    return emit_one(
        world,
        LLMFailed(
            **next_of(inv, now),
            step=cmd.step,
            error=cmd.error[:2000],
        ),
    )


@_decide.register
def _(cmd: RecordToolCall, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    return emit_one(
        world,
        ToolCalled(
            **next_of(inv, now),
            call_id=cmd.call_id,
            tool=cmd.tool,
            arguments=cmd.arguments,
            step=cmd.step,
        ),
    )


@_decide.register
def _(cmd: RecordToolResult, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    return emit_one(
        world,
        ToolResulted(
            **next_of(inv, now),
            call_id=cmd.call_id,
            tool=cmd.tool,
            status=cmd.status,
            observed_at=cmd.observed_at,
            summary=cmd.summary,
            facts=cmd.facts,
            payload=cmd.payload,
            blob=cmd.blob,
            size=cmd.size,
        ),
    )


@_decide.register
def _(cmd: ProposeAction, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    spec = inv.action(cmd.action_id)
    if spec is None:
        allowed = ", ".join(a.id for a in inv.actions) or "none"
        raise Rejected(
            f"action {cmd.action_id!r} is not one of runbook {inv.runbook_id}'s actions "
            f"(allowed: {allowed})",
            422,
        )
    problems = params_problems(spec.params_schema, cmd.params)
    if problems:
        raise Rejected(f"params for {spec.id} are invalid: " + "; ".join(problems), 422)
    for p in inv.proposals:
        if p.action_id == spec.id and p.params == cmd.params:
            raise Rejected(
                f"{spec.id} with these params was already proposed ({p.proposal_id})", 422
            )
    pid = proposal_id_for(inv.id, cmd.call_id)
    out = _Out(world, now)
    if inv.shadow:
        return _shadow_proposal(out, inv, spec, cmd, pid, now=now)
    out.emit(
        ActionProposed(
            **next_of(inv, now),
            proposal_id=pid,
            incident_id=inv.incident_id,
            runbook_id=inv.runbook_id,
            runbook_version=inv.runbook_version,
            action_id=spec.id,
            kind=spec.kind,
            params=cmd.params,
            risk=spec.risk,
            rationale=cmd.rationale,
            evidence=cmd.evidence,
            rollback=spec.rollback,
            call_id=cmd.call_id,
            proposed_by=cmd.proposed_by,
            target=cmd.target,
            target_source=cmd.target_source,
        )
    )
    out.emit(
        ToolResulted(
            **stamp(inv.id, inv.version + 2, now),
            call_id=cmd.call_id,
            tool="propose_action",
            status="ok",
            observed_at=now,
            summary=f"proposed {spec.id} (risk {spec.risk}) as {pid}; a person or policy decides",
        )
    )
    return out.events


def _shadow_proposal(
    out: _Out, inv: Investigation, spec: ActionSpec, cmd: ProposeAction, pid: UUID, *, now: datetime
) -> list[DomainEvent]:
    out.emit(
        ShadowActionProposed(
            **next_of(inv, now),
            proposal_id=pid,
            incident_id=inv.incident_id,
            runbook_id=inv.runbook_id,
            runbook_version=inv.runbook_version,
            action_id=spec.id,
            kind=spec.kind,
            params=cmd.params,
            risk=spec.risk,
            rationale=cmd.rationale,
            evidence=cmd.evidence,
            call_id=cmd.call_id,
            proposed_by=cmd.proposed_by,
        )
    )
    out.emit(
        ToolResulted(
            **stamp(inv.id, inv.version + 2, now),
            call_id=cmd.call_id,
            tool="propose_action",
            status="ok",
            observed_at=now,
            summary=f"recorded {spec.id} as shadow proposal {pid}; shadow runs never execute",
        )
    )
    return out.events


@_decide.register
def _(cmd: PromoteRunbook, world: World, now: datetime) -> list[DomainEvent]:
    if cmd.role not in ("approver", "admin"):
        raise Rejected(f"promoting a runbook needs the approver or admin role, not {cmd.role}", 403)
    if not cmd.reason.strip():
        raise Rejected("say why the version is promoted (reason)", 422)
    if not cmd.version.strip():
        raise Rejected("give the version to promote", 422)
    book = world.investigations
    if book.promoted.get(cmd.runbook_id) == cmd.version:
        raise Rejected(f"runbook {cmd.runbook_id} v{cmd.version} is already promoted", 409)
    return emit_one(
        world,
        RunbookPromoted(
            originator_id=runbook_stream_id(cmd.runbook_id),
            originator_version=book.promotion_versions.get(cmd.runbook_id, 0) + 1,
            timestamp=now,
            runbook_id=cmd.runbook_id,
            version=cmd.version,
            previous_version=cmd.previous_version,
            by=cmd.by,
            reason=cmd.reason,
        ),
    )


@_decide.register
def _(cmd: ExhaustBudget, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    if inv.exhausted:
        raise Rejected(f"budget already exhausted ({inv.exhausted})")
    return emit_one(
        world,
        BudgetExhausted(
            **next_of(inv, now),
            limit=cmd.limit,
            detail=cmd.detail,
        ),
    )


@_decide.register
def _(cmd: ConcludeInvestigation, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    out = _Out(world, now)
    out.emit(
        InvestigationConcluded(
            **next_of(inv, now),
            summary=cmd.summary,
            probable_cause=cmd.probable_cause,
            evidence=cmd.evidence,
            proposals=tuple(p.proposal_id for p in inv.proposals),
            concluded_by=cmd.concluded_by,
        )
    )
    if cmd.escalate:
        out.emit(
            InvestigationEscalated(
                **stamp(inv.id, inv.version + 2, now),
                incident_id=inv.incident_id,
                reason=cmd.escalate,
            )
        )
    return out.events


@_decide.register
def _(cmd: AbandonInvestigation, world: World, now: datetime) -> list[DomainEvent]:
    inv = _live(world, cmd.investigation_id, cmd.expected_version)
    return emit_one(
        world,
        InvestigationAbandoned(
            **next_of(inv, now),
            reason=cmd.reason,
        ),
    )


# --- evolve ----------------------------------------------------------------------------


def _bump(world: World, event: DomainEvent, **changes: object) -> Investigation:
    inv = world.investigations.active[event.originator_id]
    new = inv.model_copy(
        update={"version": event.originator_version, "updated_at": event.timestamp, **changes}
    )
    world.investigations.active[inv.id] = new
    return new


def _retire(world: World) -> None:
    """Move finished runs of incidents that left the hot set to the bounded past."""
    book = world.investigations
    for iid in [
        i.id for i in book.active.values() if i.finished and i.incident_id not in world.incidents
    ]:
        book.past[iid] = book.active.pop(iid)
    while len(book.past) > book.past_kept:
        del book.past[next(iter(book.past))]


@evolve.register
def _(event: InvestigationStarted, world: World) -> None:
    _retire(world)
    world.investigations.active[event.originator_id] = Investigation(
        id=event.originator_id,
        version=event.originator_version,
        incident_id=event.incident_id,
        run=event.run,
        runbook_id=event.runbook_id,
        runbook_version=event.runbook_version,
        mode=event.mode,
        model=event.model,
        severity=event.severity,
        incident_opened_at=event.incident_opened_at,
        started_at=event.timestamp,
        updated_at=event.timestamp,
        budget=event.budget,
        actions=event.actions,
        shadow=event.shadow,
    )


@evolve.register
def _(event: LLMRequested, world: World) -> None:
    _bump(world, event, status="running", awaiting_step=event.step)


@evolve.register
def _(event: LLMResponded, world: World) -> None:
    inv = world.investigations.active[event.originator_id]
    _bump(
        world,
        event,
        awaiting_step=None,
        llm_calls=inv.llm_calls + 1,
        usage=inv.usage + event.usage,
        cost=inv.cost + event.cost,
    )


@evolve.register
def _(event: LLMFailed, world: World) -> None:
    _bump(world, event, awaiting_step=None)


@evolve.register
def _(event: ToolCalled, world: World) -> None:
    inv = world.investigations.active[event.originator_id]
    _bump(world, event, status="running", tool_calls=inv.tool_calls + 1)


@evolve.register
def _(event: ToolResulted, world: World) -> None:
    _bump(world, event)


@evolve.register
def _(event: ActionProposed, world: World) -> None:
    # The action's own entry (daemon/domain/actions.py) starts here too: one handler per type.
    world.actions.record_proposal(event, set(world.incidents))
    inv = world.investigations.active.get(event.originator_id)
    if inv is None:
        return
    ref = ProposalRef(
        proposal_id=event.proposal_id,
        action_id=event.action_id,
        kind=event.kind,
        risk=event.risk,
        params=event.params,
        rationale=event.rationale,
    )
    _bump(world, event, proposals=(*inv.proposals, ref))


@evolve.register
def _(event: ShadowActionProposed, world: World) -> None:
    # Not an ActionEntry: the actions stage never sees a shadow proposal.
    inv = world.investigations.active.get(event.originator_id)
    if inv is None:
        return
    ref = ProposalRef(
        proposal_id=event.proposal_id,
        action_id=event.action_id,
        kind=event.kind,
        risk=event.risk,
        params=event.params,
        rationale=event.rationale,
    )
    _bump(world, event, proposals=(*inv.proposals, ref))


@evolve.register
def _(event: RunbookPromoted, world: World) -> None:
    world.investigations.promoted[event.runbook_id] = event.version
    world.investigations.promotion_versions[event.runbook_id] = event.originator_version


@evolve.register
def _(event: BudgetExhausted, world: World) -> None:
    _bump(world, event, exhausted=f"{event.limit}: {event.detail}")


@evolve.register
def _(event: InvestigationConcluded, world: World) -> None:
    _bump(
        world,
        event,
        status="concluded",
        finished_at=event.timestamp,
        awaiting_step=None,
        summary=event.summary,
        probable_cause=event.probable_cause,
        evidence=event.evidence,
    )


@evolve.register
def _(event: InvestigationEscalated, world: World) -> None:
    _bump(world, event, escalated=event.reason)


@evolve.register
def _(event: InvestigationAbandoned, world: World) -> None:
    _bump(
        world,
        event,
        status="abandoned",
        finished_at=event.timestamp,
        awaiting_step=None,
        summary=f"abandoned: {event.reason}",
    )
