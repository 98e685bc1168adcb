"""Shadow runbooks in the console: each shadow run next to the active run of the same
incident (what the candidate would have proposed, what was proposed, what people approved
and what was verified), a tally per runbook, and promotion as a person's decision.

Promotion records `RunbookPromoted` (approver or admin, with a reason) exactly as
`POST /api/v1/runbooks/{id}/promote` does; installing the file stays a deliberate step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from daemon.agent.views import shadow_view
from daemon.domain import Rejected
from daemon.domain.investigation_model import PromoteRunbook, RunbookPromoted, runbook_stream_id
from daemon.web.console import Con, Refused, back, posted
from daemon.web.sessions import Session

router = APIRouter(include_in_schema=False)


@dataclass
class Tally:
    """One runbook's shadow record: how often its candidate agreed with people."""

    runbook: str
    shadow_version: str = ""
    active_version: str = ""
    runs: int = 0
    agreed: int = 0
    shadow_proposed: int = 0
    approved: int = 0
    verified: int = 0
    promoted: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


def tallies(rows: list[dict[str, Any]]) -> list[Tally]:
    """Per runbook, from `shadow_view` rows (oldest first): the latest versions compared and
    how many runs agreed with what people approved."""
    out: dict[str, Tally] = {}
    for r in rows:
        t = out.setdefault(r["runbook"], Tally(r["runbook"]))
        t.shadow_version = r["shadow_version"]
        t.active_version = r["active_version"] or t.active_version
        t.runs += 1
        t.agreed += bool(r["agrees_with_people"])
        t.shadow_proposed += len(r["shadow_proposals"])
        t.approved += sum(1 for o in r["outcomes"] if o["approved"])
        t.verified += sum(1 for o in r["outcomes"] if o["verified"])
        t.promoted = r["promoted"]
    return sorted(out.values(), key=lambda t: t.runbook)


@router.get("/runbooks")
async def runbooks(request: Request, con: Con) -> Response:
    async def render(session: Session) -> Response:
        world = con.ctx.ingestor.world
        rows = shadow_view(world)
        tally = tallies(rows)
        for t in tally:
            events = await asyncio.to_thread(
                con.ctx.ingestor.log.stream, runbook_stream_id(t.runbook)
            )
            t.history = [
                {
                    "at": e.timestamp,
                    "version": e.version,
                    "previous": e.previous_version,
                    "by": e.by,
                    "reason": e.reason,
                }
                for e in events
                if isinstance(e, RunbookPromoted)
            ]
        return con.page(request, "runbooks.html", session, rows=rows, tallies=tally)

    return await con.guarded(request, render)


@router.post("/runbooks/{runbook_id}/promote")
async def promote(request: Request, con: Con, runbook_id: str) -> Response:
    try:
        session, data = await posted(request, con)
    except Refused as r:
        return r.response
    me = session.identity
    version = data.get("version", "").strip()
    try:
        await con.ctx.ingestor.execute(
            PromoteRunbook(
                runbook_id[:200],
                version[:64],
                data.get("previous_version", "").strip()[:64],
                me.name,
                me.role,
                data.get("reason", "").strip()[:2000],
            )
        )
        session.flash("ok", f"promoted {runbook_id} v{version}: recorded as your decision")
    except Rejected as e:
        session.flash("error", e.reason)
    return back(data, "/runbooks")
