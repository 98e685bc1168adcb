"""HTTP API for working an incident: note, assign/take, unacknowledge, snooze, reopen, change
severity; its whole story; and a postmortem export (Markdown or JSON).

Each verb becomes an event recording who (the caller's identity), when, and the channel
it came through (`via`: api, cli or console).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from daemon.config.auth import Identity
from daemon.domain import Rejected
from daemon.domain.durations import parse_duration
from daemon.domain.incident_work import (
    AssignIncident,
    ChangeSeverity,
    LinkIncident,
    NoteIncident,
    ReopenIncident,
    SnoozeIncident,
    UnacknowledgeIncident,
)
from daemon.domain.state import Incident
from daemon.web.bodies import documented, json_body
from daemon.web.story import alert_page, gather, markdown, rebuilt, story

if TYPE_CHECKING:
    from daemon.domain.events import DomainEvent
    from daemon.web.context import ApiContext

Via = Literal["api", "cli", "console"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    via: Via = "api"


class NoteIn(_In):
    """A note's text."""

    text: str = Field(min_length=1, max_length=4000)


class AssignIn(_In):
    """Who owns the incident ("" unassigns)."""

    assignee: str = Field(max_length=200)


class ReasonIn(_In):
    """An optional reason."""

    reason: str = Field(default="", max_length=2000)


class SnoozeIn(_In):
    """Until when escalation waits: a time, or a duration from now (`for`: "30m")."""

    until: datetime | None = None
    for_: str | None = Field(default=None, alias="for", max_length=20)
    reason: str = Field(default="", max_length=2000)


class SeverityIn(_In):
    """The new severity."""

    severity: str = Field(max_length=20)
    reason: str = Field(default="", max_length=2000)


class LinkIn(_In):
    """The incident to link to, and why."""

    other: UUID
    reason: str = Field(default="", max_length=2000)


B = TypeVar("B", bound=_In)


def incident_summary(inc: Incident) -> dict[str, Any]:
    """The incident's own fields as the API shows them."""
    out = inc.model_dump(mode="json")
    out["id"] = str(inc.id)
    return out


def incidents_router(ctx: ApiContext) -> APIRouter:
    """The incident-work endpoints, bound to a running daemon."""
    router = APIRouter()
    ing = ctx.ingestor

    def who(request: Request, needs: str, via: str = "api") -> Identity:
        peer = request.client.host if request.client else None
        ident = ctx.auth.identify(request.headers.get("authorization"), peer, needs)
        return Identity(ident.name, ident.role, via)

    async def run(command: Any, incident_id: UUID) -> dict[str, Any]:
        await ing.execute(command)
        return incident_summary(ing.world.incidents[incident_id])

    async def caller(request: Request, model: type[B]) -> tuple[Identity, B]:
        # The caller first: a stranger's body is never read (401 before any 422).
        me = who(request, "responder")
        body = await json_body(request, model)
        return Identity(me.name, me.role, body.via), body

    @router.post("/api/v1/incidents/{incident_id}/note", openapi_extra=documented(NoteIn))
    async def note(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, NoteIn)
        return await run(NoteIncident(incident_id, me.name, body.text, me.channel), incident_id)

    @router.post("/api/v1/incidents/{incident_id}/assign", openapi_extra=documented(AssignIn))
    async def assign(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, AssignIn)
        cmd = AssignIncident(incident_id, me.name, body.assignee, me.channel)
        return await run(cmd, incident_id)

    @router.post("/api/v1/incidents/{incident_id}/take", openapi_extra=documented(_In))
    async def take(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, _ = await caller(request, _In)
        return await run(AssignIncident(incident_id, me.name, me.name, me.channel), incident_id)

    @router.post("/api/v1/incidents/{incident_id}/unack", openapi_extra=documented(ReasonIn))
    async def unack(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, ReasonIn)
        cmd = UnacknowledgeIncident(incident_id, me.name, body.reason, me.channel)
        return await run(cmd, incident_id)

    @router.post("/api/v1/incidents/{incident_id}/snooze", openapi_extra=documented(SnoozeIn))
    async def snooze(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, SnoozeIn)
        until = snooze_until(body, ctx.clock())
        cmd = SnoozeIncident(incident_id, me.name, until, body.reason, me.channel)
        return await run(cmd, incident_id)

    @router.post("/api/v1/incidents/{incident_id}/reopen", openapi_extra=documented(ReasonIn))
    async def reopen(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, ReasonIn)
        return await run(ReopenIncident(incident_id, me.name, body.reason, me.channel), incident_id)

    @router.post(
        "/api/v1/incidents/{incident_id}/severity", openapi_extra=documented(SeverityIn)
    )
    async def severity(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, SeverityIn)
        cmd = ChangeSeverity(incident_id, me.name, body.severity, body.reason, me.channel)
        return await run(cmd, incident_id)

    @router.post("/api/v1/incidents/{incident_id}/link", openapi_extra=documented(LinkIn))
    async def link(request: Request, incident_id: UUID) -> dict[str, Any]:
        me, body = await caller(request, LinkIn)
        cmd = LinkIncident(incident_id, me.name, body.other, body.reason, me.channel)
        return await run(cmd, incident_id)

    @router.get("/api/v1/incidents/{incident_id}/story")
    async def whole_story(request: Request, incident_id: UUID) -> dict[str, Any]:
        who(request, "viewer")
        return await story_of(ctx, incident_id)

    @router.get("/api/v1/incidents/{incident_id}/export")
    async def export(
        request: Request, incident_id: UUID, format: Literal["json", "markdown"] = "markdown"
    ) -> Response:
        who(request, "viewer")
        view = await story_of(ctx, incident_id)
        if format == "json":
            return Response(_json(view), media_type="application/json")
        return PlainTextResponse(markdown(view), media_type="text/markdown; charset=utf-8")

    return router


def snooze_until(body: SnoozeIn, now: datetime) -> datetime:
    """The end of a snooze from its request, refused with the reason when unclear."""
    if (body.until is None) == (body.for_ is None):
        raise Rejected("give either `until` (a time) or `for` (a duration such as 30m)", 422)
    if body.for_ is not None:
        try:
            return now + parse_duration(body.for_)
        except ValueError as e:
            raise Rejected(f"for: {e}", 422) from None
    until = body.until
    assert until is not None
    if until.tzinfo is None:
        raise Rejected("until: give a time zone (e.g. 2026-03-01T14:00:00Z)", 422)
    return until


async def story_of(ctx: ApiContext, incident_id: UUID) -> dict[str, Any]:
    """The incident's story (`story_and_events`)."""
    return (await story_and_events(ctx, incident_id))[0]


async def story_and_events(
    ctx: ApiContext, incident_id: UUID
) -> tuple[dict[str, Any], list[DomainEvent]]:
    """The incident with the first page of its alerts and its story (hot, closed, or rebuilt
    from the log), bounded: `alerts_count` and `alerts_next` say where the other alerts are,
    `alert_events_left_out` how many older alert events the story leaves out; and the
    incident's own events it read (its newest alert events, every other one)."""
    ing = ctx.ingestor
    world = ing.world
    size = ctx.settings.limits.page_size
    inc: Incident | None = world.incidents.get(incident_id) or world.closed.get(incident_id)
    if inc is None:
        inc = await asyncio.to_thread(rebuilt, ing, incident_id)
        if inc is None:
            raise Rejected(f"no incident {incident_id}", 404)
    streams, left_out = await gather(ing, incident_id, size)
    view = incident_summary(inc)
    page, total, nxt = alert_page(world, incident_id, "", size)
    view["alerts"] = [
        {
            "fingerprint": a.alert.fingerprint,
            "status": a.alert.status,
            "labels": a.alert.labels,
            "starts_at": a.alert.starts_at.isoformat(),
        }
        for a in page
    ]
    view["alerts_count"] = total
    view["alerts_next"] = nxt
    view.update(story(world, incident_id, streams))
    view["alert_events_left_out"] = left_out
    return view, streams[0][1]


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"
