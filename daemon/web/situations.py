"""HTTP API for situations (incidents with one probable cause) and for inhibited alerts.

Listing needs a viewer; linking and unlinking by hand needs a responder. Every link says
which rule (or person) made it and why.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from daemon.domain import Rejected, World
from daemon.domain.situation_model import LinkIncidents, Situation, UnlinkIncident
from daemon.web.bodies import json_body
from daemon.web.context import ApiContext, Ctx
from daemon.web.paging import page_of


class LinkIn(BaseModel):
    """Incidents to link, and why."""

    model_config = ConfigDict(extra="forbid")
    incident_ids: list[UUID] = Field(min_length=1, max_length=1000)
    reason: str = Field(default="", max_length=2000)


class UnlinkIn(BaseModel):
    """The incident to take out, and why."""

    model_config = ConfigDict(extra="forbid")
    incident_id: UUID
    reason: str = Field(default="", max_length=2000)


def situation_view(s: Situation, world: World) -> dict[str, Any]:
    """A situation for the API: its lead, its members with why each was linked."""
    members = []
    for iid, link in s.members.items():
        inc = world.incidents.get(iid) or world.closed.get(iid)
        members.append(
            {
                "incident_id": str(iid),
                "title": inc.title if inc else "",
                "state": inc.state if inc else "unknown",
                "severity": inc.severity if inc else "none",
                "lead": iid == s.lead,
                "rule": link.rule,
                "reason": link.reason,
                "by": link.by,
                "linked_at": link.at.isoformat(),
            }
        )
    return {
        "id": str(s.id),
        "state": s.state,
        "opened_at": s.opened_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
        "lead_incident_id": str(s.lead),
        "keys": s.keys,
        "members": members,
        "closed_reason": s.closed_reason,
    }


def situation_of(world: World, incident_id: UUID) -> dict[str, Any] | None:
    """The open situation an incident is in, as `situation_view` shows it (for the console)."""
    s = world.situations.of_incident(incident_id)
    return situation_view(s, world) if s is not None else None


router = APIRouter()


def _view(ctx: ApiContext, situation_id: UUID) -> dict[str, Any]:
    s = ctx.ingestor.world.situations.get(situation_id)
    if s is None:
        raise Rejected(f"no situation {situation_id}", 404)
    return situation_view(s, ctx.ingestor.world)


@router.get("/api/v1/situations")
async def list_situations(
    request: Request,
    ctx: Ctx,
    closed: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> dict[str, Any]:
    """Situations, newest first, a page at a time (`next` is the next page's cursor)."""
    ctx.identify(request, "viewer")
    world = ctx.ingestor.world
    book = world.situations
    pool = [*book.active.values(), *(book.past.values() if closed else ())]
    page, nxt = page_of(
        pool, lambda s: (s.opened_at, str(s.id)), cursor, limit or ctx.settings.limits.page_size
    )
    return {"situations": [situation_view(s, world) for s in page], "next": nxt}


@router.get("/api/v1/situations/{situation_id}")
async def show_situation(request: Request, ctx: Ctx, situation_id: UUID) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    return _view(ctx, situation_id)


# Each POST authenticates before it reads its body: a stranger gets 401, never a 422.
@router.post("/api/v1/situations")
async def create_situation(request: Request, ctx: Ctx) -> dict[str, Any]:
    by = ctx.identify(request, "responder").name
    body = await json_body(request, LinkIn)
    events = await ctx.ingestor.execute(
        LinkIncidents(tuple(body.incident_ids), by, reason=body.reason)
    )
    return _view(ctx, events[0].originator_id)


@router.post("/api/v1/situations/{situation_id}/link")
async def link(request: Request, ctx: Ctx, situation_id: UUID) -> dict[str, Any]:
    by = ctx.identify(request, "responder").name
    body = await json_body(request, LinkIn)
    await ctx.ingestor.execute(
        LinkIncidents(tuple(body.incident_ids), by, situation_id, reason=body.reason)
    )
    return _view(ctx, situation_id)


@router.post("/api/v1/situations/{situation_id}/unlink")
async def unlink(request: Request, ctx: Ctx, situation_id: UUID) -> dict[str, Any]:
    by = ctx.identify(request, "responder").name
    body = await json_body(request, UnlinkIn)
    await ctx.ingestor.execute(UnlinkIncident(situation_id, body.incident_id, by, body.reason))
    return _view(ctx, situation_id)


@router.get("/api/v1/inhibited")
async def inhibited(
    request: Request,
    ctx: Ctx,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> dict[str, Any]:
    """Firing alerts muted by inhibit rules, with the alert that mutes each; newest first,
    a page at a time (`next` is the next page's cursor)."""
    ctx.identify(request, "viewer")
    world = ctx.ingestor.world
    items = []
    held = [world.alerts[fp] for fp in world.inhibited_firing]
    page, nxt = page_of(
        held,
        lambda st: (st.alert.starts_at, st.alert.fingerprint),
        cursor,
        limit or ctx.settings.limits.page_size,
    )
    for st in page:
        fp = st.alert.fingerprint
        src = world.alerts.get(st.inhibited_by)
        items.append(
            {
                "fingerprint": fp,
                "labels": st.alert.labels,
                "starts_at": st.alert.starts_at.isoformat(),
                "inhibited_by": st.inhibited_by,
                "inhibited_by_labels": src.alert.labels if src else {},
                "rule": st.inhibit_rule,
            }
        )
    return {"inhibited": items, "next": nxt}
