"""Approve, reject, pause and resume on behalf of a person, from any channel.

The domain refuses what state does not allow (a second approval by the same person, an
expired window, a role without permission); each refusal is recorded as an
ActionRequestRefused event before the caller hears the reason, so refusals are audited.
Slack's Approve/Reject buttons come here through `SlackApprovals`.
"""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

from daemon.config.auth import Identity
from daemon.domain import Rejected
from daemon.domain.action_model import (
    ActionEntry,
    ApproveAction,
    PauseExecution,
    RecordRefusal,
    RejectAction,
    ResumeExecution,
)
from daemon.domain.commands import Command
from daemon.engine.ingest import Ingestor
from daemon.engine.store import StoreUnavailable

log = logging.getLogger("watchkeeper.approvals")


async def audit_refusal(
    ingestor: Ingestor, action: UUID | None, request: str, ident: Identity, reason: str
) -> None:
    """Record a refused request (best effort: the refusal itself still reaches the caller)."""
    try:
        await ingestor.submit(
            [
                RecordRefusal(
                    uuid4(), action, request, ident.name, ident.role, ident.channel, reason
                )
            ]
        )
    except StoreUnavailable:
        log.exception("could not audit a refused %s by %s", request, ident.name)
    log.info("refused %s by %s (%s): %s", request, ident.name, ident.channel, reason)


async def _audited(
    ingestor: Ingestor, cmd: Command, action: UUID | None, request: str, ident: Identity
) -> None:
    try:
        await ingestor.execute(cmd)
    except Rejected as e:
        await audit_refusal(ingestor, action, request, ident, e.reason)
        raise


async def approve_action(
    ingestor: Ingestor, action_id: UUID, ident: Identity, comment: str = ""
) -> ActionEntry:
    """Approve as `ident`; raise Rejected (audited) with the reason when refused."""
    cmd = ApproveAction(action_id, ident.name, ident.role, ident.channel, comment)
    await _audited(ingestor, cmd, action_id, "approve", ident)
    entry = ingestor.world.actions.get(action_id)
    assert entry is not None
    return entry


async def reject_action(
    ingestor: Ingestor, action_id: UUID, ident: Identity, reason: str
) -> ActionEntry:
    """Reject as `ident`; raise Rejected (audited) with the reason when refused."""
    cmd = RejectAction(action_id, ident.name, ident.role, ident.channel, reason)
    await _audited(ingestor, cmd, action_id, "reject", ident)
    entry = ingestor.world.actions.get(action_id)
    assert entry is not None
    return entry


async def pause_execution(ingestor: Ingestor, ident: Identity, reason: str = "") -> None:
    """Engage the kill switch (admin)."""
    await _audited(ingestor, PauseExecution(ident.name, ident.role, reason), None, "pause", ident)


async def resume_execution(ingestor: Ingestor, ident: Identity) -> None:
    """Release the kill switch (admin)."""
    await _audited(ingestor, ResumeExecution(ident.name, ident.role), None, "resume", ident)


def outcome_line(entry: ActionEntry, by: str) -> str:
    """A sentence for the person who approved or rejected."""
    what = entry.plan.summary if entry.plan else entry.action_id
    if entry.status == "rejected":
        return f"Rejected {what} as {by}."
    if entry.status == "pending_approval":
        return (
            f"Approved {what} as {by}: {len(entry.approvals)} of "
            f"{entry.approvals_required} approvals; waiting for another approver."
        )
    return f"Approved {what} as {by}; it runs after a final check of the world."


class SlackApprovals:
    """The ApprovalDecider behind Slack's Approve and Reject buttons."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    async def __call__(
        self, *, incident_id: UUID | None, proposal: str, approve: bool, by: Identity
    ) -> str:
        """Approve or reject the proposal the button carries."""
        action_id = UUID(proposal)
        entry = self.ingestor.world.actions.get(action_id)
        if entry is not None and incident_id is not None and entry.incident_id != incident_id:
            raise Rejected("this button belongs to another incident's message", 400)
        if approve:
            done = await approve_action(self.ingestor, action_id, by, "approved in Slack")
        else:
            why = f"rejected in Slack by {by.name}"
            done = await reject_action(self.ingestor, action_id, by, why)
        return outcome_line(done, by.name)
