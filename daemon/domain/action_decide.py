"""Decisions and state changes of proposed actions (registered with `decide`/`evolve`).

Every refusal names what was wrong for the person who asked; the API records it as an
ActionRequestRefused event so refusals are audited too. A dispatch is recorded only after
the world was checked again (drift), and only once: a second DispatchAction finds the
action no longer approved. After a crash a dispatch without outcome becomes unknown.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from daemon.domain.action_model import (
    APPROVAL_DEADLINE,
    APPROVER_ROLES,
    KILL_SWITCH,
    REMINDER_DEADLINE,
    ActionApproved,
    ActionCancelled,
    ActionDispatched,
    ActionEntry,
    ActionEscalated,
    ActionFailed,
    ActionOutcomeUnknown,
    ActionPlan,
    ActionRejected,
    ActionRequestRefused,
    ActionSucceeded,
    Approval,
    ApprovalExpired,
    ApprovalReminded,
    ApprovalRequested,
    ApproveAction,
    CancelAction,
    DecidePolicy,
    DispatchAction,
    DispatchRollback,
    DriftChecked,
    ExecutionPaused,
    ExecutionResumed,
    ExpireApproval,
    MarkOutcomeUnknown,
    PauseExecution,
    PolicyDecided,
    RecordOutcome,
    RecordRefusal,
    RecordVerification,
    RejectAction,
    RemindApproval,
    ResumeExecution,
    RollbackDispatched,
    RollbackFailed,
    RolledBack,
    VerificationFailed,
    VerificationPassed,
)
from daemon.domain.commands import Rejected
from daemon.domain.decide import _decide, _Out
from daemon.domain.durations import format_duration
from daemon.domain.events import DomainEvent, first_of, next_of, stamp
from daemon.domain.evolve import evolve
from daemon.domain.lease import (
    LEASE_DEADLINE,
    ActionLeaseWaiting,
    LeaseBusy,
    LeaseWait,
    lease_busy,
    situation_rival,
    wait_over,
)
from daemon.domain.policy import Dispatch, Proposal, Verdict, blocking, evaluate
from daemon.domain.state import World
from daemon.domain.timer_model import DeadlineCancelled, DeadlineSet, deadline_id

# --- helpers -----------------------------------------------------------------------------


def _entry(world: World, action_id: UUID) -> ActionEntry:
    entry = world.actions.get(action_id)
    if entry is None:
        raise Rejected(f"no action {action_id}", 404)
    return entry


def _v(world: World, action_id: UUID) -> int:
    """The next version of an action's stream."""
    return _entry(world, action_id).version + 1


def _when(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _target_text(entry: ActionEntry) -> str:
    return entry.plan.summary if entry.plan else entry.action_id


def _cancel_deadlines(out: _Out, action_id: UUID, reason: str) -> None:
    for d in out.world.deadlines.about(action_id):
        out.emit(
            DeadlineCancelled(
                **next_of(d, out.now),
                kind=d.kind,
                subjects=d.subjects,
                reason=reason,
            )
        )


def _escalate(out: _Out, entry: ActionEntry, reason: str) -> None:
    out.emit(
        ActionEscalated(
            **stamp(entry.id, _v(out.world, entry.id), out.now),
            incident_id=entry.incident_id,
            reason=reason,
        )
    )


def where(plan: ActionPlan) -> str:
    """What runs and where, for an approver: `systemctl restart nginx.service on web-3 (ssh)`."""
    if not plan.host:
        return plan.summary
    how = f" ({plan.transport})" if plan.transport else ""
    return f"{plan.summary} on {plan.host}{how}"


def proposal_of(entry: ActionEntry, labels: dict[str, str] | None = None) -> Proposal:
    """The policy's view of an action with a plan."""
    plan = entry.plan
    return Proposal(
        action_id=entry.action_id,
        kind=entry.kind,
        risk=entry.risk,
        runbook_id=entry.runbook_id,
        targets=plan.targets if plan else (),
        labels=entry.labels if labels is None else labels,
        verb=plan.verb if plan else "",
        host=plan.host if plan else "",
    )


def why_not_pending(entry: ActionEntry, now: datetime, request: str) -> str | None:
    """Why an approve/reject of this action is refused now, or None when it may proceed."""
    s = entry.status
    if s == "pending_approval":
        if entry.expires_at is not None and now >= entry.expires_at:
            return (
                f"the approval window closed at {_when(entry.expires_at)}; "
                "the action is denied and cannot be approved"
            )
        return None
    if s == "proposed":
        return "policy has not decided on this action yet; try again in a moment"
    if s == "refused":
        return "policy refused this action: " + "; ".join(entry.reasons)
    if s == "observed":
        return (
            "mode observe: this action is only recorded with what it would run, never "
            f"executed; there is nothing to {request}"
        )
    if s == "approved":
        return f"already approved by {entry.decided_by}; it is waiting to run"
    if s == "rejected":
        return f"already rejected by {entry.decided_by}: {entry.reason}"
    if s == "expired":
        assert entry.expires_at is not None
        return f"the approval window closed at {_when(entry.expires_at)}; the action was denied"
    if s == "cancelled":
        return f"the action was cancelled: {entry.reason}"
    return f"the action was already executed (status {s}); it cannot be {request}d again"


def drift_checks(world: World, entry: ActionEntry, now: datetime) -> tuple[list[str], list[str]]:
    """Re-check, from state, what must still be true to run: (lines shown, problems)."""
    lines: list[str] = []
    problems: list[str] = []
    inc = world.incidents.get(entry.incident_id)
    if inc is None or not inc.is_active:
        problems.append(f"incident is {inc.state if inc else 'closed'}")
    else:
        lines.append(f"✓ incident is {inc.state}")
        if inc.firing == 0:
            problems.append("none of the incident's alerts is firing any more")
        else:
            lines.append(f"✓ {inc.firing} alert(s) still firing")
    max_age = timedelta(seconds=entry.evidence_max_age_seconds)
    for ev in entry.evidence:
        if ev.observed_at is None:
            lines.append(f"- evidence {ev.call_id} ({ev.tool}) has no observation time")
            continue
        age = now - ev.observed_at
        if age > max_age:
            problems.append(
                f"evidence {ev.call_id} ({ev.tool}) is {format_duration(age)} old; "
                f"the runbook allows {format_duration(max_age)}"
            )
        else:
            lines.append(
                f"✓ evidence {ev.call_id} ({ev.tool}) observed {format_duration(age)} ago "
                f"(max {format_duration(max_age)})"
            )
    if not entry.evidence:
        lines.append("- no evidence cited")
    return lines, problems


# --- decisions ---------------------------------------------------------------------------


@_decide.register
def _(cmd: DecidePolicy, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status != "proposed":
        raise Rejected(f"policy already decided on action {entry.id} ({entry.status})")
    rules = cmd.rules
    mode = rules.mode_for(entry.runbook_id, cmd.labels)
    if cmd.plan is None or cmd.plan_error:
        verdict = Verdict(
            outcome="refuse",
            mode=mode,
            reasons=(f"cannot run {entry.action_id}: {cmd.plan_error or 'no plan'}",),
        )
    else:
        proposal = proposal_of(entry.model_copy(update={"plan": cmd.plan}), cmd.labels)
        verdict = evaluate(proposal, rules, world.actions.dispatches, now)
    situation = world.situations.of_incident(entry.incident_id)
    if situation is not None and verdict.outcome == "execute":
        rival = situation_rival(world.actions.active, set(situation.members), entry)
        if rival is not None:
            what = rival.plan.summary if rival.plan else rival.action_id
            verdict = verdict.model_copy(
                update={
                    "outcome": "approve",
                    "approvals_required": max(verdict.approvals_required, 1),
                    "reasons": (
                        *verdict.reasons,
                        f"action {rival.id} ({what}, {rival.status}) was proposed in the same "
                        "situation: a person decides both together",
                    ),
                }
            )
    reasons = verdict.reasons
    paused = world.actions.paused
    if paused and verdict.outcome in ("execute", "approve"):
        reasons = (*reasons, f"execution is paused by {world.actions.paused_by}; runs after resume")
    out = _Out(world, now)
    out.emit(
        PolicyDecided(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            outcome=verdict.outcome,
            mode=verdict.mode,
            reasons=reasons,
            approvals_required=verdict.approvals_required,
            plan=cmd.plan,
            rollback_plan=cmd.rollback_plan,
            rollback_note=cmd.rollback_note,
            verify=cmd.verify,
            labels=cmd.labels,
            evidence_max_age_seconds=cmd.evidence_max_age_seconds,
            paused=paused,
        )
    )
    if verdict.outcome != "approve":
        return out.events
    expires = now + rules.approval_timeout
    out.emit(
        ApprovalRequested(
            **stamp(entry.id, _v(world, entry.id), now),
            incident_id=entry.incident_id,
            expires_at=expires,
            approvals_required=verdict.approvals_required,
            summary=where(cmd.plan) if cmd.plan else entry.action_id,
        )
    )
    subjects = (entry.id, entry.incident_id)
    out.emit(
        DeadlineSet(
            **first_of(deadline_id(APPROVAL_DEADLINE, entry.id), now),
            kind=APPROVAL_DEADLINE,
            due_at=expires,
            subjects=subjects,
        )
    )
    if timedelta(0) < rules.reminder_before < rules.approval_timeout:
        out.emit(
            DeadlineSet(
                **first_of(deadline_id(REMINDER_DEADLINE, entry.id), now),
                kind=REMINDER_DEADLINE,
                due_at=expires - rules.reminder_before,
                subjects=subjects,
            )
        )
    return out.events


def _check_approver(by: str, role: str, request: str) -> None:
    if role not in APPROVER_ROLES:
        raise Rejected(
            f"{by} has role {role}; to {request} actions needs role approver or higher", 403
        )


@_decide.register
def _(cmd: ApproveAction, world: World, now: datetime) -> list[DomainEvent]:
    _check_approver(cmd.by, cmd.role, "approve")
    entry = _entry(world, cmd.action_id)
    why = why_not_pending(entry, now, "approve")
    if why:
        raise Rejected(why)
    if any(a.by == cmd.by for a in entry.approvals):
        raise Rejected(
            f"{cmd.by} already approved this action; it needs {entry.approvals_required} "
            "approvals from different people"
        )
    out = _Out(world, now)
    count = len(entry.approvals) + 1
    out.emit(
        ActionApproved(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            by=cmd.by,
            role=cmd.role,
            channel=cmd.channel,
            comment=cmd.comment,
            approvals=count,
            required=entry.approvals_required,
        )
    )
    if count >= entry.approvals_required:
        _cancel_deadlines(out, entry.id, f"approved by {cmd.by}")
    return out.events


@_decide.register
def _(cmd: RejectAction, world: World, now: datetime) -> list[DomainEvent]:
    _check_approver(cmd.by, cmd.role, "reject")
    entry = _entry(world, cmd.action_id)
    why = why_not_pending(entry, now, "reject")
    if why:
        raise Rejected(why)
    if not cmd.reason.strip():
        raise Rejected("a rejection needs a reason", 422)
    out = _Out(world, now)
    out.emit(
        ActionRejected(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            by=cmd.by,
            role=cmd.role,
            channel=cmd.channel,
            reason=cmd.reason,
        )
    )
    _cancel_deadlines(out, entry.id, f"rejected by {cmd.by}")
    return out.events


@_decide.register
def _(cmd: RecordRefusal, world: World, now: datetime) -> list[DomainEvent]:
    out = _Out(world, now)
    out.emit(
        ActionRequestRefused(
            **first_of(cmd.record_id, now),
            action=cmd.action,
            request=cmd.request,
            by=cmd.by,
            role=cmd.role,
            channel=cmd.channel,
            reason=cmd.reason,
        )
    )
    return out.events


@_decide.register
def _(cmd: ExpireApproval, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status != "pending_approval" or entry.expires_at is None:
        raise Rejected(f"action {entry.id} is {entry.status}; nothing to expire")
    if now < entry.expires_at:
        raise Rejected(f"the approval window is open until {_when(entry.expires_at)}")
    out = _Out(world, now)
    out.emit(
        ApprovalExpired(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            expires_at=entry.expires_at,
        )
    )
    _cancel_deadlines(out, entry.id, "approval expired")
    approvals = (
        f" ({len(entry.approvals)} of {entry.approvals_required})" if entry.approvals else ""
    )
    _escalate(
        out,
        entry,
        f"nobody approved {_target_text(entry)} by {_when(entry.expires_at)}{approvals}; "
        "denied — the incident needs a person",
    )
    return out.events


@_decide.register
def _(cmd: RemindApproval, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status != "pending_approval" or entry.expires_at is None:
        raise Rejected(f"action {entry.id} is {entry.status}; no reminder needed")
    out = _Out(world, now)
    out.emit(
        ApprovalReminded(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            expires_at=entry.expires_at,
            reason=(
                f"approval still needed for {_target_text(entry)}; denied at "
                f"{_when(entry.expires_at)} unless approved"
            ),
        )
    )
    return out.events


@_decide.register
def _(cmd: CancelAction, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status not in ("proposed", "pending_approval", "approved"):
        raise Rejected(f"action {entry.id} is {entry.status}; it can no longer be cancelled")
    out = _Out(world, now)
    out.emit(
        ActionCancelled(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            reason=cmd.reason,
        )
    )
    _cancel_deadlines(out, entry.id, cmd.reason)
    return out.events


@_decide.register
def _(cmd: DispatchAction, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    book = world.actions
    if book.paused:
        raise Rejected(f"execution is paused by {book.paused_by}; the action waits for resume")
    if entry.status != "approved" or entry.plan is None:
        raise Rejected(
            f"action {entry.id} is {entry.status}; only an approved action is dispatched"
        )
    open_incidents = {i.id for i in world.incidents.values() if i.is_active}
    busy = lease_busy(book.active, open_incidents, world.situations.waiting, entry)
    if busy is not None:
        return _wait_for_lease(world, entry, busy, now)
    lines, problems = drift_checks(world, entry, now)
    problems += blocking(proposal_of(entry), cmd.rules, book.dispatches, now)
    if cmd.precondition_held is not None:
        lines += list(cmd.precondition)
        if not cmd.precondition_held:
            failed = [line.removeprefix("✗ ") for line in cmd.precondition if line.startswith("✗")]
            problems.append(
                "precondition no longer holds" + (f": {'; '.join(failed)}" if failed else "")
            )
    problems += cmd.problems
    out = _Out(world, now)
    out.emit(
        DriftChecked(
            **next_of(entry, now),
            passed=not problems,
            checks=(*lines, *(f"✗ {p}" for p in problems)),
        )
    )
    if problems:
        out.emit(
            ActionCancelled(
                **stamp(entry.id, _v(world, entry.id), now),
                incident_id=entry.incident_id,
                reason="drift check: " + "; ".join(problems),
            )
        )
        return out.events
    out.emit(
        ActionDispatched(
            **stamp(entry.id, _v(world, entry.id), now),
            incident_id=entry.incident_id,
            idempotency_key=cmd.idempotency_key,
            plan=entry.plan,
        )
    )
    return out.events


def _wait_for_lease(
    world: World, entry: ActionEntry, busy: LeaseBusy, now: datetime
) -> list[DomainEvent]:
    """The host is leased: start waiting (with a deadline), keep waiting, or give up."""
    out = _Out(world, now)
    if busy.waiting is None:
        until = now + world.policy.correlation.lease_wait
        out.emit(
            ActionLeaseWaiting(
                originator_id=entry.id,
                originator_version=entry.version + 1,
                timestamp=now,
                incident_id=entry.incident_id,
                target=busy.target,
                held_by=busy.holder.id,
                holder=busy.reason(),
                until=until,
            )
        )
        out.emit(
            DeadlineSet(
                originator_id=deadline_id(LEASE_DEADLINE, entry.id, entry.version + 1),
                originator_version=1,
                timestamp=now,
                kind=LEASE_DEADLINE,
                due_at=until,
                subjects=(entry.id,),
            )
        )
        return out.events
    if not wait_over(busy, now):
        raise Rejected(
            f"waiting for {busy.target} until {_when(busy.waiting.until)}: {busy.reason()}"
        )
    waited = format_duration(now - busy.waiting.since)
    reason = f"{busy.target} still leased after waiting {waited}: {busy.reason()}"
    out.emit(
        ActionCancelled(
            originator_id=entry.id,
            originator_version=entry.version + 1,
            timestamp=now,
            incident_id=entry.incident_id,
            reason=reason,
        )
    )
    _cancel_deadlines(out, entry.id, reason)
    _escalate(out, world.actions.active[entry.id], f"not run: {reason}; a person decides")
    return out.events


@_decide.register
def _(cmd: RecordOutcome, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    expected = "rolling_back" if cmd.rollback else "dispatched"
    if entry.status != expected:
        raise Rejected(f"action {entry.id} is {entry.status}, not {expected}; outcome not recorded")
    out = _Out(world, now)
    base: dict[str, Any] = {
        "originator_id": entry.id,
        "originator_version": entry.version + 1,
        "timestamp": now,
        "incident_id": entry.incident_id,
    }
    if cmd.rollback:
        if cmd.outcome == "succeeded":
            out.emit(RolledBack(**base, detail=cmd.detail, output=cmd.output))
            _escalate(out, entry, f"{entry.verification}; rolled back: {cmd.detail}")
        else:
            why = cmd.detail if cmd.outcome == "failed" else f"outcome unknown: {cmd.detail}"
            out.emit(RollbackFailed(**base, reason=why, output=cmd.output))
            _escalate(out, entry, f"{entry.verification}; the rollback failed: {why}")
        return out.events
    if cmd.outcome == "succeeded":
        out.emit(
            ActionSucceeded(**base, detail=cmd.detail, output=cmd.output, seconds=cmd.seconds)
        )
    elif cmd.outcome == "failed":
        out.emit(ActionFailed(**base, reason=cmd.detail, output=cmd.output, seconds=cmd.seconds))
        _escalate(out, entry, f"{_target_text(entry)} failed: {cmd.detail}")
    else:
        out.emit(ActionOutcomeUnknown(**base, reason=cmd.detail))
        _escalate(
            out,
            entry,
            f"{_target_text(entry)}: outcome unknown ({cmd.detail}); check by hand — "
            "it will not be run again",
        )
    return out.events


@_decide.register
def _(cmd: RecordVerification, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status != "verifying":
        raise Rejected(f"action {entry.id} is {entry.status}; nothing to verify")
    out = _Out(world, now)
    if cmd.passed:
        out.emit(
            VerificationPassed(
                **next_of(entry, now),
                detail=cmd.detail,
                observed_at=now,
            )
        )
        return out.events
    out.emit(
        VerificationFailed(
            **next_of(entry, now),
            reason=cmd.detail,
        )
    )
    if entry.rollback_plan is None:
        undo = (
            f"roll back by hand: {entry.rollback_note}"
            if entry.rollback_note
            else "the runbook defines no rollback"
        )
        _escalate(out, entry, f"verification failed: {cmd.detail}; {undo}")
    return out.events


@_decide.register
def _(cmd: DispatchRollback, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status != "verification_failed" or entry.rollback_plan is None:
        raise Rejected(f"action {entry.id} is {entry.status}; no rollback to run")
    out = _Out(world, now)
    out.emit(
        RollbackDispatched(
            **next_of(entry, now),
            incident_id=entry.incident_id,
            idempotency_key=cmd.idempotency_key,
            plan=entry.rollback_plan,
        )
    )
    return out.events


@_decide.register
def _(cmd: MarkOutcomeUnknown, world: World, now: datetime) -> list[DomainEvent]:
    entry = _entry(world, cmd.action_id)
    if entry.status == "dispatched":
        return _decide(RecordOutcome(entry.id, "unknown", cmd.reason), world, now)
    if entry.status == "rolling_back":
        return _decide(RecordOutcome(entry.id, "unknown", cmd.reason, rollback=True), world, now)
    raise Rejected(f"action {entry.id} is {entry.status}; its outcome is known")


@_decide.register
def _(cmd: PauseExecution, world: World, now: datetime) -> list[DomainEvent]:
    book = world.actions
    if cmd.role != "admin":
        raise Rejected(f"{cmd.by} has role {cmd.role}; pausing execution needs role admin", 403)
    if book.paused:
        since = _when(book.paused_at) if book.paused_at else "?"
        raise Rejected(f"execution is already paused (by {book.paused_by} since {since})")
    out = _Out(world, now)
    out.emit(
        ExecutionPaused(
            **stamp(KILL_SWITCH, book.switch_version + 1, now),
            by=cmd.by,
            reason=cmd.reason,
        )
    )
    return out.events


@_decide.register
def _(cmd: ResumeExecution, world: World, now: datetime) -> list[DomainEvent]:
    book = world.actions
    if cmd.role != "admin":
        raise Rejected(f"{cmd.by} has role {cmd.role}; resuming execution needs role admin", 403)
    if not book.paused:
        raise Rejected("execution is not paused")
    out = _Out(world, now)
    out.emit(
        ExecutionResumed(
            **stamp(KILL_SWITCH, book.switch_version + 1, now),
            by=cmd.by,
        )
    )
    return out.events


# --- state changes -----------------------------------------------------------------------


def _bump(world: World, event: DomainEvent, **changes: object) -> ActionEntry:
    book = world.actions
    where = book.active if event.originator_id in book.active else book.past
    entry = where[event.originator_id]
    new = entry.model_copy(
        update={"version": event.originator_version, "updated_at": event.timestamp, **changes}
    )
    where[entry.id] = new
    return new


def _done(event: DomainEvent) -> dict[str, object]:
    return {"finished_at": event.timestamp}


@evolve.register
def _(event: PolicyDecided, world: World) -> None:
    status = {
        "execute": "approved",
        "approve": "pending_approval",
        "refuse": "refused",
        "observe": "observed",
    }[event.outcome]
    extra = _done(event) if status in ("refused", "observed") else {}
    _bump(
        world,
        event,
        status=status,
        mode=event.mode,
        reasons=event.reasons,
        approvals_required=event.approvals_required,
        plan=event.plan,
        rollback_plan=event.rollback_plan,
        rollback_note=event.rollback_note,
        verify=event.verify,
        labels=event.labels,
        evidence_max_age_seconds=event.evidence_max_age_seconds,
        decided_by="policy" if status == "approved" else "",
        **extra,
    )


@evolve.register
def _(event: ActionLeaseWaiting, world: World) -> None:
    _bump(world, event)
    waits = world.situations.waiting
    for aid in [a for a in waits if (e := world.actions.active.get(a)) is None or e.finished]:
        del waits[aid]
    waits[event.originator_id] = LeaseWait(
        target=event.target, held_by=event.held_by, since=event.timestamp, until=event.until
    )


@evolve.register
def _(event: ApprovalRequested, world: World) -> None:
    _bump(world, event, expires_at=event.expires_at)


@evolve.register
def _(event: ApprovalReminded, world: World) -> None:
    _bump(world, event)


@evolve.register
def _(event: ActionApproved, world: World) -> None:
    entry = world.actions.get(event.originator_id)
    assert entry is not None
    approvals = (
        *entry.approvals,
        Approval(
            by=event.by,
            role=event.role,
            channel=event.channel,
            at=event.timestamp,
            comment=event.comment,
        ),
    )
    changes: dict[str, object] = {"approvals": approvals}
    if event.approvals >= event.required:
        changes |= {"status": "approved", "decided_by": ", ".join(a.by for a in approvals)}
    _bump(world, event, **changes)


@evolve.register
def _(event: ActionRejected, world: World) -> None:
    _bump(
        world, event, status="rejected", decided_by=event.by, reason=event.reason, **_done(event)
    )


@evolve.register
def _(event: ApprovalExpired, world: World) -> None:
    _bump(world, event, status="expired", reason="approval expired", **_done(event))


@evolve.register
def _(event: ActionRequestRefused, world: World) -> None:
    book = world.actions
    entry = book.get(event.action) if event.action is not None else None
    if entry is None:
        return
    line = (
        f"{event.timestamp.isoformat(timespec='seconds')} {event.by} ({event.role}, "
        f"{event.channel}) {event.request}: {event.reason}"
    )
    where = book.active if entry.id in book.active else book.past
    # Another stream's event: the action's own version stays as it is.
    where[entry.id] = entry.model_copy(update={"refusals": (*entry.refusals[-9:], line)})


@evolve.register
def _(event: DriftChecked, world: World) -> None:
    _bump(world, event, drift=event.checks)


@evolve.register
def _(event: ActionCancelled, world: World) -> None:
    _bump(world, event, status="cancelled", reason=event.reason, **_done(event))


@evolve.register
def _(event: ActionDispatched, world: World) -> None:
    _bump(
        world,
        event,
        status="dispatched",
        idempotency_key=event.idempotency_key,
        dispatched_at=event.timestamp,
    )
    book = world.actions
    for target in event.plan.targets:
        book.dispatches.append(
            Dispatch(
                action_id=event.plan.action_id,
                kind=event.plan.kind,
                target=target,
                at=event.timestamp,
                host=event.plan.host,
            )
        )
    if len(book.dispatches) > book.dispatches_kept:
        del book.dispatches[: len(book.dispatches) - book.dispatches_kept]


@evolve.register
def _(event: ActionSucceeded, world: World) -> None:
    entry = world.actions.get(event.originator_id)
    assert entry is not None
    if entry.verify is not None:
        _bump(
            world,
            event,
            status="verifying",
            detail=event.detail,
            output=event.output,
            succeeded_at=event.timestamp,
        )
    else:
        _bump(
            world,
            event,
            status="succeeded",
            detail=event.detail,
            output=event.output,
            **_done(event),
        )


@evolve.register
def _(event: ActionFailed, world: World) -> None:
    _bump(
        world,
        event,
        status="failed",
        detail=event.reason,
        output=event.output,
        **_done(event),
    )


@evolve.register
def _(event: ActionOutcomeUnknown, world: World) -> None:
    _bump(world, event, status="unknown", detail=event.reason, **_done(event))


@evolve.register
def _(event: VerificationPassed, world: World) -> None:
    _bump(world, event, status="verified", verification=event.detail, **_done(event))


@evolve.register
def _(event: VerificationFailed, world: World) -> None:
    entry = world.actions.get(event.originator_id)
    assert entry is not None
    last = {} if entry.rollback_plan is not None else _done(event)
    _bump(
        world,
        event,
        status="verification_failed",
        verification=f"verification failed: {event.reason}",
        **last,
    )


@evolve.register
def _(event: RollbackDispatched, world: World) -> None:
    _bump(world, event, status="rolling_back")


@evolve.register
def _(event: RolledBack, world: World) -> None:
    _bump(world, event, status="rolled_back", rollback=event.detail, **_done(event))


@evolve.register
def _(event: RollbackFailed, world: World) -> None:
    _bump(world, event, status="rollback_failed", rollback=event.reason, **_done(event))


@evolve.register
def _(event: ActionEscalated, world: World) -> None:
    _bump(world, event, escalated=event.reason)


@evolve.register
def _(event: ExecutionPaused, world: World) -> None:
    book = world.actions
    book.paused, book.paused_by, book.paused_at = True, event.by, event.timestamp
    book.pause_reason = event.reason
    book.switch_version = event.originator_version


@evolve.register
def _(event: ExecutionResumed, world: World) -> None:
    book = world.actions
    book.paused, book.paused_by, book.paused_at, book.pause_reason = False, "", None, ""
    book.switch_version = event.originator_version
