"""HTTP API for actions: list, show, approve, reject, and the kill switch (pause/resume).

Any known identity may ask; the domain decides whether its role suffices (approver for
approve/reject, admin for pause/resume), so a refusal for a too-low role is audited like
every other refusal.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from daemon.actions.approvals import (
    approve_action,
    pause_execution,
    reject_action,
    resume_execution,
)
from daemon.actions.views import action_view, book_view
from daemon.config.auth import Identity
from daemon.domain import Rejected
from daemon.web.bodies import json_body
from daemon.web.context import ApiContext, Ctx
from daemon.web.paging import page_of

Via = Literal["api", "cli"]


class ApproveIn(BaseModel):
    """An approval's comment, and the channel it came through."""

    model_config = ConfigDict(extra="forbid")
    comment: str = Field(default="", max_length=2000)
    via: Via = "api"


class RejectIn(BaseModel):
    """Why the action is rejected."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    via: Via = "api"


class PauseIn(BaseModel):
    """Why execution is paused."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=2000)
    via: Via = "api"


router = APIRouter()


def who(ctx: ApiContext, request: Request, needs: str, via: str = "api") -> Identity:
    """The identity asking, with the channel it says it came through."""
    ident = ctx.identify(request, needs)
    return Identity(ident.name, ident.role, via)


@router.get("/api/v1/actions")
async def list_actions(
    request: Request,
    ctx: Ctx,
    *,
    status: Annotated[list[str] | None, Query()] = None,
    incident: UUID | None = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> dict[str, Any]:
    """Actions, newest first, a page at a time (`next` is the next page's cursor)."""
    who(ctx, request, "viewer")
    book = ctx.ingestor.world.actions
    pool = book.for_incident(incident) if incident else [
        *book.past.values(),
        *book.active.values(),
    ]
    items = [a for a in pool if not status or a.status in status]
    page, nxt = page_of(
        items, lambda a: (a.proposed_at, str(a.id)), cursor, limit or ctx.settings.limits.page_size
    )
    return {"actions": [action_view(a) for a in page], "execution": book_view(book), "next": nxt}


@router.get("/api/v1/actions/{action_id}")
async def show_action(request: Request, ctx: Ctx, action_id: UUID) -> dict[str, Any]:
    who(ctx, request, "viewer")
    entry = ctx.ingestor.world.actions.get(action_id)
    if entry is None:
        raise Rejected(f"no action {action_id}", 404)
    return action_view(entry)


# Each POST authenticates before it reads its body: a stranger gets 401, never a 422.
@router.post("/api/v1/actions/{action_id}/approve")
async def approve(request: Request, ctx: Ctx, action_id: UUID) -> dict[str, Any]:
    who(ctx, request, "viewer")
    body = await json_body(request, ApproveIn)
    ident = who(ctx, request, "viewer", body.via)
    return action_view(await approve_action(ctx.ingestor, action_id, ident, body.comment))


@router.post("/api/v1/actions/{action_id}/reject")
async def reject(request: Request, ctx: Ctx, action_id: UUID) -> dict[str, Any]:
    who(ctx, request, "viewer")
    body = await json_body(request, RejectIn)
    ident = who(ctx, request, "viewer", body.via)
    return action_view(await reject_action(ctx.ingestor, action_id, ident, body.reason))


@router.post("/api/v1/pause")
async def pause(request: Request, ctx: Ctx) -> dict[str, Any]:
    who(ctx, request, "viewer")
    body = await json_body(request, PauseIn)
    await pause_execution(ctx.ingestor, who(ctx, request, "viewer", body.via), body.reason)
    return book_view(ctx.ingestor.world.actions)


@router.post("/api/v1/resume")
async def resume(request: Request, ctx: Ctx) -> dict[str, Any]:
    who(ctx, request, "viewer")
    body = await json_body(request, PauseIn)
    await resume_execution(ctx.ingestor, who(ctx, request, "viewer", body.via))
    return book_view(ctx.ingestor.world.actions)
