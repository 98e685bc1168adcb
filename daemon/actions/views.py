"""How actions look in the API, the CLI and the console (plain JSON-able dicts)."""

from __future__ import annotations

from typing import Any

from daemon.domain.action_decide import where
from daemon.domain.action_model import ActionBook, ActionEntry


def action_view(a: ActionEntry) -> dict[str, Any]:
    """One action with its plan, policy reasons, approvals, checks and outcome."""
    out = a.model_dump(mode="json")
    out["id"] = str(a.id)
    out["runs"] = a.plan.summary if a.plan else ""
    # Where it runs: the resolved host once policy planned it, else the proposed target.
    out["host"] = (a.plan.host if a.plan else "") or a.target
    out["runs_on"] = where(a.plan) if a.plan else ""
    out["finished"] = a.finished
    return out


def book_view(book: ActionBook) -> dict[str, Any]:
    """The kill switch's state."""
    return {
        "paused": book.paused,
        "paused_by": book.paused_by,
        "paused_at": book.paused_at.isoformat() if book.paused_at else None,
        "reason": book.pause_reason,
    }
