"""HTTP API for actions: list, show, approve, reject, and the kill switch (pause/resume).

Any known identity may ask; the domain decides whether its role suffices (approver for
approve/reject, admin for pause/resume), so a refusal for a too-low role is audited like
every other refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal
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

if TYPE_CHECKING:
    from daemon.web.context import ApiContext

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


def actions_router(ctx: ApiContext) -> APIRouter:
    """The actions endpoints, bound to a running daemon."""
    router = APIRouter()
    ing = ctx.ingestor

    def who(request: Request, needs: str, via: str = "api") -> Identity:
        peer = request.client.host if request.client else None
        ident = ctx.auth.identify(request.headers.get("authorization"), peer, needs)
        return Identity(ident.name, ident.role, via)

    @router.get("/api/v1/actions")
    async def list_actions(
        request: Request,
        status: Annotated[list[str] | None, Query()] = None,
        incident: UUID | None = None,
    ) -> dict[str, Any]:
        who(request, "viewer")
        book = ing.world.actions
        pool = book.for_incident(incident) if incident else [
            *book.past.values(),
            *book.active.values(),
        ]
        items = [a for a in pool if not status or a.status in status]
        items.sort(key=lambda a: a.proposed_at, reverse=True)
        return {"actions": [action_view(a) for a in items], "execution": book_view(book)}

    @router.get("/api/v1/actions/{action_id}")
    async def show_action(request: Request, action_id: UUID) -> dict[str, Any]:
        who(request, "viewer")
        entry = ing.world.actions.get(action_id)
        if entry is None:
            raise Rejected(f"no action {action_id}", 404)
        return action_view(entry)

    # Each POST authenticates before it reads its body: a stranger gets 401, never a 422.
    @router.post("/api/v1/actions/{action_id}/approve")
    async def approve(request: Request, action_id: UUID) -> dict[str, Any]:
        who(request, "viewer")
        body = await json_body(request, ApproveIn)
        ident = who(request, "viewer", body.via)
        return action_view(await approve_action(ing, action_id, ident, body.comment))

    @router.post("/api/v1/actions/{action_id}/reject")
    async def reject(request: Request, action_id: UUID) -> dict[str, Any]:
        who(request, "viewer")
        body = await json_body(request, RejectIn)
        ident = who(request, "viewer", body.via)
        return action_view(await reject_action(ing, action_id, ident, body.reason))

    @router.post("/api/v1/pause")
    async def pause(request: Request) -> dict[str, Any]:
        who(request, "viewer")
        body = await json_body(request, PauseIn)
        await pause_execution(ing, who(request, "viewer", body.via), body.reason)
        return book_view(ing.world.actions)

    @router.post("/api/v1/resume")
    async def resume(request: Request) -> dict[str, Any]:
        who(request, "viewer")
        body = await json_body(request, PauseIn)
        await resume_execution(ing, who(request, "viewer", body.via))
        return book_view(ing.world.actions)

    return router
