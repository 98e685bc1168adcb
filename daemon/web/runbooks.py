"""HTTP API for runbook versions: shadow runs compared with what people approved, and a
person's promotion of a shadow version (recorded as a RunbookPromoted event)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from daemon.agent.views import shadow_view
from daemon.domain.investigation_model import PromoteRunbook
from daemon.web.bodies import json_body
from daemon.web.context import Ctx


class PromoteIn(BaseModel):
    """Which version to promote, and why."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    previous_version: str = Field(default="", max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


router = APIRouter()


@router.get("/api/v1/runbooks/shadow")
async def shadow_runs(request: Request, ctx: Ctx) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    world = ctx.ingestor.world
    return {"runs": shadow_view(world), "promoted": dict(world.investigations.promoted)}


@router.post("/api/v1/runbooks/{runbook_id}/promote")
async def promote(request: Request, ctx: Ctx, runbook_id: str) -> dict[str, Any]:
    ident = ctx.identify(request, "approver")  # before the body is read: a stranger gets 401
    body = await json_body(request, PromoteIn)
    await ctx.ingestor.execute(
        PromoteRunbook(
            runbook_id, body.version, body.previous_version, ident.name, ident.role, body.reason
        )
    )
    return {"runbook": runbook_id, "promoted": body.version, "by": ident.name}
