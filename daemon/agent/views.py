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
    latest = runs[-1]
    return {
        "status": latest.status,
        "summary": latest.summary,
        "probable_cause": latest.probable_cause,
        "escalated": latest.escalated,
        "proposals": [p.model_dump(mode="json") for r in runs for p in r.proposals],
        "tokens": sum(r.usage.total for r in runs),
        "cost": round(sum(r.cost for r in runs), 6),
        "runs": [run_view(r) for r in runs],
    }
