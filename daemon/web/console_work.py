"""Working an incident from the console: ack, resolve, note, assign/take, unack, snooze,
reopen, severity and silence as CSRF-protected form posts; the incident list's filters and
pages; and live updates (server-sent events from the event log, plus a small script).

Forms work without JavaScript (post, redirect back with a flash). With it, the page listens
on `/console/live` and refreshes its live regions when the log moves, without a reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from daemon.config.auth import Identity, is_loopback
from daemon.domain import Acknowledge, CreateSilence, Matcher, Rejected, ResolveIncident
from daemon.domain.durations import format_duration, parse_duration
from daemon.domain.incident_work import (
    AssignIncident,
    ChangeSeverity,
    NoteIncident,
    ReopenIncident,
    SnoozeIncident,
    UnacknowledgeIncident,
)
from daemon.domain.matchers import matches_all
from daemon.domain.state import World
from daemon.web.sessions import COOKIE, CSRF_REFUSED, Session, Sessions, session_form

if TYPE_CHECKING:
    from daemon.web.context import ApiContext

PAGE_SIZE = 25
# How long one live stream lasts before the browser reconnects (EventSource does it).
LIVE_SECONDS = 55.0
LIVE_POLL = 0.25
VERBS = ("ack", "resolve", "note", "assign", "take", "unack", "snooze", "reopen", "severity")
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# --- the incident list: filters and pages (pure) -------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One page of filtered incident rows and how to reach the others (pages count from 0)."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    query: dict[str, str]
    problem: str = ""

    @property
    def more(self) -> bool:
        """Whether a later page exists."""
        return self.page + 1 < self.pages

    def link(self, page: int) -> str:
        """The URL of another page with the same filters."""
        return "/?" + urlencode({**{k: v for k, v in self.query.items() if v}, "page": page})


def select_rows(
    rows: list[dict[str, Any]], world: World, params: dict[str, str], size: int = PAGE_SIZE
) -> Listing:
    """Filter rows by state, severity, label matchers, assignee and text; cut one page."""
    query = {k: params.get(k, "").strip() for k in ("state", "severity", "match", "assignee", "q")}
    problem = ""
    matchers: list[Matcher] = []
    for text in filter(None, (m.strip() for m in query["match"].split(","))):
        try:
            matchers.append(Matcher.parse(text))
        except ValueError as e:
            problem = f"label matcher {text!r}: {e}"
    picked = []
    for r in rows:
        inc = r["inc"]
        if query["state"] and inc.state != query["state"]:
            continue
        if query["severity"] and inc.severity != query["severity"]:
            continue
        if query["assignee"] and inc.assignee != query["assignee"]:
            continue
        q = query["q"].lower()
        if q and q not in (inc.title or "").lower() and q not in inc.group_key.lower():
            continue
        if matchers and not any(
            matches_all(tuple(matchers), a.alert.labels) for a in world.member_alerts(inc.id)
        ):
            continue
        picked.append(r)
    size = max(1, size)
    pages = max(1, -(-len(picked) // size))
    try:
        page = min(max(0, int(params.get("page", "0") or 0)), pages - 1)
    except ValueError:
        page = 0
    start = page * size
    return Listing(picked[start : start + size], len(picked), page, pages, query, problem)


# --- the timeline, grouped (pure) --------------------------------------------------------


@dataclass(frozen=True)
class RowGroup:
    """Consecutive timeline rows of one stream: the incident's own, or an agent run's or an
    action's steps, shown collapsible."""

    stream: str
    rows: list[Any]

    @property
    def collapsible(self) -> bool:
        """Agent steps and actions fold away; the incident's own rows do not."""
        return self.stream != "incident"

    @property
    def open(self) -> bool:
        """Actions start open (what ran matters); agent steps start closed."""
        return self.stream.startswith("action ")

    @property
    def summary(self) -> str:
        """`investigation disk #1: 7 steps, Tool x [ok] … Investigation concluded`."""
        first, last = self.rows[0].text, self.rows[-1].text
        span = first if len(self.rows) == 1 else f"{first} … {last}"
        return f"{self.stream}: {len(self.rows)} step(s), {span}"


def group_rows(rows: list[Any]) -> list[RowGroup]:
    """Timeline rows (time order) cut into runs of one stream."""
    groups: list[RowGroup] = []
    for r in rows:
        if groups and groups[-1].stream == r.stream:
            groups[-1].rows.append(r)
        else:
            groups.append(RowGroup(r.stream, [r]))
    return groups


# --- commands from forms ---------------------------------------------------------------


def command_for(
    verb: str, incident_id: UUID, me: Identity, form: dict[str, str], now: datetime
) -> Any:
    """The domain command a console form asks for (Rejected with the reason when unclear)."""
    text = form.get("text", "") or form.get("comment", "") or form.get("reason", "")
    by, via = me.name, "console"
    if verb == "ack":
        return Acknowledge(incident_id, by, text)
    if verb == "resolve":
        return ResolveIncident(incident_id, by, text)
    if verb == "note":
        return NoteIncident(incident_id, by, text, via)
    if verb == "assign":
        return AssignIncident(incident_id, by, form.get("assignee", ""), via)
    if verb == "take":
        return AssignIncident(incident_id, by, by, via)
    if verb == "unack":
        return UnacknowledgeIncident(incident_id, by, text, via)
    if verb == "reopen":
        return ReopenIncident(incident_id, by, text, via)
    if verb == "severity":
        return ChangeSeverity(incident_id, by, form.get("severity", ""), text, via)
    if verb == "snooze":
        return SnoozeIncident(incident_id, by, now + _duration(form), text, via)
    raise Rejected(f"unknown verb {verb!r}", 404)


def _duration(form: dict[str, str]) -> Any:
    try:
        return parse_duration(form.get("for", "") or "")
    except ValueError as e:
        raise Rejected(f"for: {e} (e.g. 30m or 2h)", 422) from None


def silence_for(
    world: World,
    incident_id: UUID,
    me: Identity,
    form: dict[str, str],
    now: datetime,
    *,
    longest: timedelta,
) -> CreateSilence:
    """A silence over the incident's group labels for the asked duration (at most `longest`,
    limits.max_silence, as over the API)."""
    inc = world.incidents.get(incident_id)
    if inc is None:
        raise Rejected(f"no incident {incident_id} in the hot set (closed or unknown)", 404)
    if not inc.group_labels:
        raise Rejected("this incident has no group labels to silence by; use the API", 422)
    matchers = tuple(Matcher(name=k, op="=", value=v) for k, v in sorted(inc.group_labels.items()))
    comment = form.get("comment", "") or f"silenced from incident {incident_id}"
    duration = _duration(form)
    if duration > longest:
        raise Rejected(f"for: longer than limits.max_silence ({format_duration(longest)})", 422)
    return CreateSilence(uuid4(), matchers, now, now + duration, me.name, comment)


# --- routes ----------------------------------------------------------------------------


def console_session(
    request: Request, ctx: ApiContext, sessions: Sessions
) -> tuple[Session | None, str]:
    """The console session, or (no tokens, loopback) a fresh local one and its new id."""
    session = sessions.get(request.cookies.get(COOKIE))
    if session is not None:
        return session, ""
    peer = request.client.host if request.client else None
    if not ctx.auth.tokens and is_loopback(peer):
        sid, session = sessions.open(Identity("local", "admin", "console"), "")
        return session, sid
    return None, ""


def console_work_router(ctx: ApiContext, sessions: Sessions) -> APIRouter:
    """The console's incident forms, live stream and script, sharing the console's sessions."""
    router = APIRouter(include_in_schema=False)
    ing = ctx.ingestor

    async def act(
        request: Request,
        incident_id: UUID,
        run: Callable[[Identity, dict[str, str]], Awaitable[str]],
    ) -> Response:
        got = await session_form(request, sessions)
        if got is None:
            return HTMLResponse(CSRF_REFUSED, 403, headers=_HEADERS)
        session, data = got
        me = Identity(session.identity.name, session.identity.role, "console")
        try:
            if not me.can("responder"):
                raise Rejected(f"{me.name} has role {me.role}; this needs responder or higher", 403)
            session.flash("ok", await run(me, data))
        except Rejected as e:
            session.flash("error", e.reason)
        return RedirectResponse(f"/incidents/{incident_id}", status_code=303, headers=_HEADERS)

    @router.post("/incidents/{incident_id}/do/{verb}")
    async def verb_form(request: Request, incident_id: UUID, verb: str) -> Response:
        async def run(me: Identity, data: dict[str, str]) -> str:
            if verb == "silence":
                longest = ctx.settings.limits.max_silence
                cmd = silence_for(ing.world, incident_id, me, data, ctx.clock(), longest=longest)
                await ing.execute(cmd)
                return f"silenced for {format_duration(cmd.ends_at - cmd.starts_at)}"
            await ing.execute(command_for(verb, incident_id, me, data, ctx.clock()))
            return {"ack": "acknowledged", "take": "taken", "unack": "unacknowledged"}.get(
                verb, f"{verb} recorded"
            )

        return await act(request, incident_id, run)

    @router.get("/console/live")
    async def live(request: Request, after: int = 0) -> Response:
        """Server-sent events: `change` with the log position whenever it moves."""
        if sessions.get(request.cookies.get(COOKIE)) is None:
            return Response("log in first", 401, headers=_HEADERS)

        async def stream() -> AsyncIterator[bytes]:
            # From the position the page was rendered at, so nothing in between is missed.
            seen = after if after > 0 else ing.world.position
            yield f"retry: 1000\nevent: hello\ndata: {seen}\n\n".encode()
            loop = asyncio.get_running_loop()
            until = loop.time() + LIVE_SECONDS
            while loop.time() < until:
                if await request.is_disconnected():
                    return
                now = ing.world.position
                if now != seen:
                    seen = now
                    yield f"event: change\ndata: {now}\n\n".encode()
                await asyncio.sleep(LIVE_POLL)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_HEADERS, "X-Accel-Buffering": "no"},
        )

    @router.get("/console.js")
    async def script() -> Response:
        text = files("daemon.web").joinpath("templates/console.js").read_text()
        return Response(
            text, media_type="text/javascript", headers={**_HEADERS, "Cache-Control": "max-age=300"}
        )

    return router
