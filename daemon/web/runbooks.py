"""HTTP API for runbook versions: shadow runs compared with what people approved, and a
person's promotion of a shadow version (recorded as a RunbookPromoted event)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from daemon.agent.views import shadow_view
from daemon.domain.investigation_model import PromoteRunbook

if TYPE_CHECKING:
    from daemon.web.context import ApiContext


class PromoteIn(BaseModel):
    """Which version to promote, and why."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    previous_version: str = Field(default="", max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


def runbooks_router(ctx: ApiContext) -> APIRouter:
    """The runbook-version endpoints, bound to a running daemon."""
    router = APIRouter()
    ing = ctx.ingestor

    @router.get("/api/v1/runbooks/shadow")
    async def shadow_runs(request: Request) -> dict[str, Any]:
        peer = request.client.host if request.client else None
        ctx.auth.identify(request.headers.get("authorization"), peer, "viewer")
        return {
            "runs": shadow_view(ing.world),
            "promoted": dict(ing.world.investigations.promoted),
        }

    @router.post("/api/v1/runbooks/{runbook_id}/promote")
    async def promote(request: Request, runbook_id: str, body: PromoteIn) -> dict[str, Any]:
        peer = request.client.host if request.client else None
        ident = ctx.auth.identify(request.headers.get("authorization"), peer, "viewer")
        await ing.execute(
            PromoteRunbook(
                runbook_id,
                body.version,
                body.previous_version,
                ident.name,
                ident.role,
                body.reason,
            )
        )
        return {"runbook": runbook_id, "promoted": body.version, "by": ident.name}

    return router
