"""How an incident's investigations look in the API, the CLI and notifications."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from daemon.domain.investigation_model import Investigation
from daemon.domain.state import World


def run_view(inv: Investigation) -> dict[str, Any]:
    """One investigation run: status, runbook, conclusion, proposals, usage and cost."""
    return {
        "id": str(inv.id),
        "run": inv.run,
        "runbook": inv.runbook_id,
        "runbook_version": inv.runbook_version,
        "shadow": inv.shadow,
        "mode": inv.mode,
        "model": inv.model,
        "status": inv.status,
        "started_at": inv.started_at.isoformat(),
        "finished_at": inv.finished_at.isoformat() if inv.finished_at else None,
        "summary": inv.summary,
        "probable_cause": inv.probable_cause,
        "evidence": [e.model_dump(mode="json") for e in inv.evidence],
        "proposals": [p.model_dump(mode="json") for p in inv.proposals],
        "escalated": inv.escalated,
        "budget_exhausted": inv.exhausted,
        "llm_calls": inv.llm_calls,
        "tool_calls": inv.tool_calls,
        "tokens": {
            "prompt": inv.usage.prompt_tokens,
            "completion": inv.usage.completion_tokens,
            "total": inv.usage.total,
        },
        "cost": round(inv.cost, 6),
    }


def investigation_view(world: World, incident_id: UUID) -> dict[str, Any] | None:
    """The incident's investigations (newest last) with totals, or None if there are none."""
    runs = world.investigations.for_incident(incident_id)
    if not runs:
        return None
    # Shadow runs are shown, but never speak for the incident nor offer their proposals.
    real = [r for r in runs if not r.shadow] or runs
    latest = real[-1]
    return {
        "status": latest.status,
        "summary": latest.summary,
        "probable_cause": latest.probable_cause,
        "escalated": latest.escalated,
        "proposals": [p.model_dump(mode="json") for r in runs if not r.shadow for p in r.proposals],
        "shadow_proposals": [
            {**p.model_dump(mode="json"), "runbook_version": r.runbook_version}
            for r in runs
            if r.shadow
            for p in r.proposals
        ],
        "tokens": sum(r.usage.total for r in runs),
        "cost": round(sum(r.cost for r in runs), 6),
        "runs": [run_view(r) for r in runs],
    }


def shadow_view(world: World) -> list[dict[str, Any]]:
    """Each shadow run next to the active run of the same incident and runbook: what the
    shadow version would have proposed, what was proposed, approved and verified."""
    book = world.investigations
    runs = [*book.past.values(), *book.active.values()]
    rows = []
    for sh in sorted((r for r in runs if r.shadow), key=lambda r: r.started_at):
        active = [
            r
            for r in runs
            if not r.shadow and r.incident_id == sh.incident_id and r.runbook_id == sh.runbook_id
        ]
        outcomes = [
            {
                "action": a.action_id,
                "params": a.params,
                "status": a.status,
                "approved": a.status
                not in (
                    "proposed",
                    "pending_approval",
                    "rejected",
                    "expired",
                    "refused",
                    "observed",
                    "cancelled",
                ),
                "verified": a.status == "verified",
            }
            for a in world.actions.for_incident(sh.incident_id)
            if a.runbook_id == sh.runbook_id
        ]
        shadow_props = [(p.action_id, p.params) for p in sh.proposals]
        approved = [(o["action"], o["params"]) for o in outcomes if o["approved"]]
        rows.append(
            {
                "incident_id": str(sh.incident_id),
                "runbook": sh.runbook_id,
                "shadow_version": sh.runbook_version,
                "active_version": active[-1].runbook_version if active else "",
                "shadow_proposals": [f"{a} {p}" for a, p in shadow_props],
                "active_proposals": [
                    f"{p.action_id} {p.params}" for r in active for p in r.proposals
                ],
                "outcomes": outcomes,
                "agrees_with_people": sorted(map(str, shadow_props)) == sorted(map(str, approved)),
                "shadow_status": sh.status,
                "shadow_summary": sh.summary[:300],
                "promoted": book.promoted.get(sh.runbook_id, ""),
            }
        )
    return rows
