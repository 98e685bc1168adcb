"""How a runbook's actions ended: proposed, approved, ran, verified, and whether the trouble
came back within a day. Pure functions over the World's actions and incidents.

`past_incidents` shows these per earlier incident; the prompt gets each action's success
record ("restart_unit: 4 of 5 verified in 30 days"); `runbooks suggest` drafts a runbook
change from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.domain.action_model import ActionEntry
from daemon.domain.state import World

CAME_BACK_WITHIN = timedelta(days=1)
RECORD_WINDOW = timedelta(days=30)

_APPROVED = frozenset(
    {
        "approved",
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
    }
)
_NOT_APPROVED = frozenset({"rejected", "expired"})
_VERIFY_FAILED = frozenset(
    {"verification_failed", "rolling_back", "rolled_back", "rollback_failed"}
)


@dataclass(frozen=True)
class Outcome:
    """One proposed action and how it ended."""

    action_id: str
    params: dict[str, Any]
    status: str
    proposed_at: datetime
    proposed_by: str
    approved: bool | None
    decided_by: str
    reason: str
    ran: bool
    verified: bool | None
    came_back: bool | None
    runbook_version: str
    rationale: str

    def line(self) -> str:
        """One line for a prompt or a table."""
        approved = {True: "approved", False: "not approved", None: "no decision"}[self.approved]
        verified = {True: "verified", False: "verification FAILED", None: "not verified"}[
            self.verified
        ]
        back = {True: "came back within a day", False: "did not come back", None: ""}[
            self.came_back
        ]
        parts = [
            f"{self.action_id} {self.params}",
            approved + (f" by {self.decided_by}" if self.decided_by else ""),
            "ran" if self.ran else "did not run",
            verified if self.ran else "",
            back,
        ]
        return "; ".join(p for p in parts if p)


def outcome_of(a: ActionEntry, world: World | None = None) -> Outcome:
    """Classify one action entry."""
    approved = True if a.status in _APPROVED else False if a.status in _NOT_APPROVED else None
    verified = True if a.status == "verified" else False if a.status in _VERIFY_FAILED else None
    return Outcome(
        action_id=a.action_id,
        params=dict(a.params),
        status=a.status,
        proposed_at=a.proposed_at,
        proposed_by=a.proposed_by,
        approved=approved,
        decided_by=a.decided_by,
        reason=a.reason,
        ran=a.dispatched_at is not None,
        verified=verified,
        came_back=came_back(world, a) if world is not None else None,
        runbook_version=a.runbook_version,
        rationale=a.rationale,
    )


def came_back(world: World, a: ActionEntry) -> bool | None:
    """Whether the incident reopened, or another of the same group opened, within a day of
    its resolution (None while it is unresolved or the day has not passed in what we hold)."""
    inc = world.incidents.get(a.incident_id) or world.closed.get(a.incident_id)
    if inc is None or inc.resolved_at is None:
        return None
    if inc.reopen_count > 0:
        return True
    until = inc.resolved_at + CAME_BACK_WITHIN
    for other in (*world.incidents.values(), *world.closed.values()):
        same_group = other.id != inc.id and other.group_key == inc.group_key
        if same_group and inc.resolved_at <= other.opened_at <= until:
            return True
    return False


def same_target(a: ActionEntry, labels: dict[str, str]) -> bool:
    """Whether an action was about the same target (instance, else its other key labels)."""
    keys = [k for k in ("instance", "name", "unit", "device", "consumergroup") if labels.get(k)]
    if not keys:
        return True
    return all(a.labels.get(k) == labels[k] for k in keys if k in a.labels) and any(
        k in a.labels for k in keys
    )


def runbook_outcomes(
    world: World,
    runbook_id: str,
    *,
    labels: dict[str, str] | None = None,
    exclude_incident: Any = None,
) -> dict[Any, list[Outcome]]:
    """Outcomes of a runbook's actions by incident (same target only, when labels are given)."""
    book = world.actions
    out: dict[Any, list[Outcome]] = {}
    for a in sorted((*book.past.values(), *book.active.values()), key=lambda e: e.proposed_at):
        if a.runbook_id != runbook_id or a.incident_id == exclude_incident:
            continue
        if labels is not None and not same_target(a, labels):
            continue
        out.setdefault(a.incident_id, []).append(outcome_of(a, world))
    return out


def success_record(
    entries: Iterable[ActionEntry], now: datetime, window: timedelta = RECORD_WINDOW
) -> dict[str, tuple[int, int, int]]:
    """Per action id: (verified, ran, proposed) in the window."""
    rec: dict[str, tuple[int, int, int]] = {}
    for a in entries:
        if a.proposed_at < now - window:
            continue
        o = outcome_of(a)
        v, r, p = rec.get(a.action_id, (0, 0, 0))
        rec[a.action_id] = (v + (o.verified is True), r + o.ran, p + 1)
    return rec


def success_record_text(
    world: World, runbook_id: str, now: datetime, window: timedelta = RECORD_WINDOW
) -> str:
    """The runbook's success record as prompt lines, or "" when it has none."""
    book = world.actions
    entries = [
        a for a in (*book.past.values(), *book.active.values()) if a.runbook_id == runbook_id
    ]
    rec = success_record(entries, now, window)
    if not rec:
        return ""
    days = round(window.total_seconds() / 86400)
    lines = [
        f"- {action}: {v} of {r} verified in {days} days ({p} proposed)"
        for action, (v, r, p) in sorted(rec.items())
    ]
    return f"Success record of runbook {runbook_id}'s actions:\n" + "\n".join(lines)
