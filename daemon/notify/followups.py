"""What a chat follow-up says about a later stage's event; pure, no I/O.

Each line names the action, its target, who did what, the outcome and, once known, the
verification result, so a thread reply can be read without opening the console.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from daemon.domain.durations import format_duration

# Event name -> the message kind it is sent as (webhook `event` names, see content.py).
FOLLOW_UPS = {
    "ActionProposed": "action_proposed",
    "ApprovalRequested": "approval_requested",
    "ApprovalReminded": "approval_reminder",
    "ActionApproved": "action_approved",
    "ActionRejected": "action_rejected",
    "ApprovalExpired": "approval_expired",
    "ActionCancelled": "action_cancelled",
    "ActionEscalated": "escalated",
    "ActionSucceeded": "action_executed",
    "ActionExecuted": "action_executed",
    "ActionFailed": "action_failed",
    "ActionOutcomeUnknown": "action_failed",
    "VerificationPassed": "action_verified",
    "VerificationFailed": "action_failed",
    "RolledBack": "action_rolled_back",
    "RollbackFailed": "action_failed",
    "InvestigationConcluded": "concluded",
    "InvestigationEscalated": "investigation_escalated",
}


def incident_of(event: Any, world: Any) -> UUID | None:
    """The incident an event is about: its own field, its action's or its investigation's."""
    inc = getattr(event, "incident_id", None)
    if isinstance(inc, UUID):
        return inc
    for book_name in ("actions", "investigations"):
        book: Any = getattr(world, book_name, None)
        entry = book.get(event.originator_id) if hasattr(book, "get") else None
        inc = getattr(entry, "incident_id", None)
        if isinstance(inc, UUID):
            return inc
    return None


def action_name(entry: Any) -> str:
    """`rotate_logs on web1 (systemctl start logrotate.service)`: what runs where."""
    if entry is None:
        return "the action"
    name = str(getattr(entry, "action_id", "") or getattr(entry, "kind", "action"))
    target = str(getattr(entry, "target", "") or "")
    labels: dict[str, str] = getattr(entry, "labels", {}) or {}
    target = target or labels.get("instance", "") or labels.get("host", "")
    plan = getattr(entry, "plan", None)
    summary = str(getattr(plan, "summary", "") or "")
    targets: tuple[str, ...] = tuple(getattr(plan, "targets", None) or ())
    if not target and targets:
        target = ", ".join(targets)
    return name + (f" on {target}" if target else "") + (f" (`{summary}`)" if summary else "")


def _who(entry: Any) -> str:
    approvals = getattr(entry, "approvals", ()) or ()
    if approvals:
        return "approved by " + ", ".join(f"{a.by} via {a.channel}" for a in approvals)
    mode = str(getattr(entry, "mode", "") or "")
    return "run by policy" + (f" ({mode} mode)" if mode else "")


def _left(until: datetime | None, now: datetime) -> str:
    if until is None:
        return ""
    if until <= now:
        return "the approval window has closed"
    return f"{format_duration(until - now)} left (expires {until:%H:%M} UTC)"


def follow_up_note(event: Any, world: Any) -> str:
    """The thread reply for a later stage's event (action, investigation).

    Times left are counted from the event, so a reply sent late still says what was true.
    """
    name = type(event).__name__
    book: Any = getattr(world, "actions", None)
    entry = book.get(event.originator_id) if hasattr(book, "get") else None
    if name == "ActionProposed":
        # Told from the event alone: the plan (and its target) may not be decided yet.
        params = ", ".join(f"{k}={v}" for k, v in event.params.items())
        return (
            f"{event.proposed_by.capitalize()} proposed {event.action_id}"
            + (f"({params})" if params else "")
            + f" ({event.kind}), risk {event.risk}"
            + (f": {event.rationale}" if event.rationale else "")
        )
    act = action_name(entry)
    if name == "ApprovalRequested":
        return (
            f"Approval requested for {act}: needs {event.approvals_required} approval(s); "
            + _left(event.expires_at, event.timestamp)
        )
    if name == "ApprovalReminded":
        left = _left(event.expires_at, event.timestamp)
        return f"Reminder: {act} still waits for approval; {left}"
    if name == "ActionApproved":
        done = (
            "; it runs after a final check of the world"
            if event.approvals >= event.required
            else f"; {event.required - event.approvals} more approval(s) needed"
        )
        return (
            f"{event.by} ({event.role}) approved {act} via {event.channel} "
            f"({event.approvals} of {event.required}){done}"
            + (f": {event.comment}" if event.comment else "")
        )
    if name == "ActionRejected":
        return f"{event.by} ({event.role}) rejected {act} via {event.channel}; it will not run" + (
            f": {event.reason}" if event.reason else ""
        )
    if name == "ApprovalExpired":
        return f"Approval for {act} expired unanswered at {event.expires_at:%H:%M} UTC; not run"
    if name == "ActionCancelled":
        return f"{act} cancelled before running: {event.reason}"
    if name in ("ActionSucceeded", "ActionExecuted"):
        verify = getattr(entry, "verify", None)
        check = (
            f"verification pending (within {format_duration_s(verify.window_seconds)})"
            if verify is not None
            else "no verification defined"
        )
        return (
            f"{act} succeeded in {getattr(event, 'seconds', 0.0):.1f}s, {_who(entry)}; "
            f"{getattr(event, 'detail', '')}; {check}"
        )
    if name == "ActionFailed":
        return f"{act} failed after {event.seconds:.1f}s, {_who(entry)}: {event.reason}"
    if name == "ActionOutcomeUnknown":
        return f"{act}: outcome unknown ({event.reason}); a person must check, it is not re-run"
    if name == "VerificationPassed":
        return f"{act} verified: {event.detail}"
    if name == "VerificationFailed":
        rollback = getattr(entry, "rollback_plan", None)
        then = "rolling back" if rollback is not None else "no rollback defined; escalated"
        return f"{act} failed verification: {event.reason}; {then}"
    if name == "RolledBack":
        return f"{act} rolled back: {event.detail}"
    if name == "RollbackFailed":
        return f"Rollback of {act} failed: {event.reason}; a person must look"
    if name == "ActionEscalated":
        return f"{act} handed to a person: {event.reason}"
    if name == "InvestigationConcluded":
        return "Investigation concluded" + (
            f": {event.probable_cause}" if event.probable_cause else f": {event.summary}"
        )
    if name == "InvestigationEscalated":
        return f"Investigation escalated to a person: {event.reason}"
    return str(getattr(event, "reason", "")) or name


def format_duration_s(seconds: float) -> str:
    """`format_duration` for a number of seconds."""
    return format_duration(timedelta(seconds=seconds))
