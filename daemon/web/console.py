"""The review console: server-rendered pages for on-call engineers at `/`.

Open incidents; an incident's page with its whole timeline; pending approvals showing
exactly what would run, the evidence, the agent's rationale and the raw alert, with
approve/reject forms. A bearer token logs a person in once (a cookie session, HttpOnly,
SameSite=Strict); every form carries the session's CSRF token; roles are enforced by the
same rules as the API. All text is autoescaped: alert labels and model output are untrusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader

from daemon.actions.approvals import approve_action, reject_action
from daemon.actions.views import book_view
from daemon.agent.views import investigation_view
from daemon.config.auth import SSO_IDENTITY, AuthError, Identity, is_loopback
from daemon.domain import Rejected
from daemon.domain.durations import format_duration
from daemon.domain.state import SEVERITY_RANK, Incident
from daemon.web.bodies import form_body
from daemon.web.console_work import group_rows, select_rows
from daemon.web.context import ApiContext
from daemon.web.login_limit import LoginThrottle
from daemon.web.sessions import (
    COOKIE,
    CSRF_REFUSED,
    LOGIN_COOKIE,
    Session,
    Sessions,
    session_form,
    token_digest,
)
from daemon.web.situations import situation_of
from daemon.web.story import alert_page, incident_events
from daemon.web.timeline import timeline

log = logging.getLogger("watchkeeper.console")
SSO_SESSION = "sso"  # the token digest of sessions opened by a trusted proxy's sign-on
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _LoginNeeded(Exception):  # noqa: N818 - a redirect, not a failure
    pass


def _env() -> Environment:
    env = Environment(loader=PackageLoader("daemon.web", "templates"), autoescape=True)
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    env.filters["ts"] = lambda t: t.isoformat(timespec="seconds") if t else "-"
    return env


def _safe_next(target: str | None, default: str) -> str:
    """Only same-site paths: no scheme, no host, no protocol-relative `//`."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _age(now: datetime, since: datetime) -> str:
    return format_duration(now - since)


class Console:
    """The console's state on one app: the running daemon, its templates, the open sessions."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.env = _env()
        self.sessions = Sessions(resolve=self.identity_now)
        self.throttle = LoginThrottle()

    # --- sessions and security -----------------------------------------------------------

    def secure(self, request: Request) -> bool:
        """Whether cookies must be `Secure` (served over https, or behind an https URL)."""
        return request.url.scheme == "https" or self.ctx.settings.http.external_url.startswith(
            "https://"
        )

    def set_cookie(self, resp: Response, request: Request, name: str, value: str) -> None:
        """Set an HttpOnly, SameSite=Strict cookie for the whole console."""
        resp.set_cookie(
            name, value, httponly=True, samesite="strict", secure=self.secure(request), path="/"
        )

    def session_of(self, request: Request) -> Session | None:
        """The request's session, if its cookie names one that is still valid."""
        return self.sessions.get(request.cookies.get(COOKIE))

    def identity_now(self, session: Session) -> Identity | None:
        """Who a session is now (None: it is over), asked by `Sessions.get` on every request,
        so the console's forms, pages and figures all see a SIGHUP's tokens and roles."""
        if session.token_digest == SSO_SESSION:
            # A proxy sign-on session lasts while the proxy still names the same person.
            sso = SSO_IDENTITY.get()
            if isinstance(sso, Identity) and sso.name == session.identity.name:
                return Identity(sso.name, sso.role, "console")
            return None
        if not session.token_digest:  # the local session: only while no tokens are set
            return session.identity if not self.ctx.auth.tokens else None
        # A token removed from the config ends its sessions; a changed role applies.
        for token, ident in self.ctx.auth.tokens.items():
            if token_digest(token) == session.token_digest:
                return Identity(ident.name, ident.role, "console")
        return None

    def page(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **data: Any,
    ) -> HTMLResponse:
        """A page rendered from its template, with the header every page shows."""
        book = self.ctx.ingestor.world.actions
        html = self.env.get_template(name).render(
            me=session.identity if session else None,
            csrf=session.csrf if session else "",
            flashes=session.take_flashes() if session else [],
            execution=book_view(book),
            pending=len(book.pending()),
            path=request.url.path,
            position=self.ctx.ingestor.world.position,  # live updates resume here
            **data,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def current(self, request: Request, response_cookies: list[tuple[str, str]]) -> Session:
        """The session, or (no tokens configured, loopback) a fresh local one."""
        session = self.session_of(request)
        if session is not None:
            return session
        sso = SSO_IDENTITY.get()
        if isinstance(sso, Identity):
            who = Identity(sso.name, sso.role, "console")
            sid, session = self.sessions.open(who, SSO_SESSION)
            response_cookies.append((COOKIE, sid))
            return session
        peer = request.client.host if request.client else None
        if not self.ctx.auth.tokens and is_loopback(peer):
            sid, session = self.sessions.open(Identity("local", "admin", "console"), "")
            response_cookies.append((COOKIE, sid))
            return session
        raise _LoginNeeded

    def with_cookies(
        self, resp: Response, request: Request, cookies: list[tuple[str, str]]
    ) -> Response:
        """`resp` with the cookies a fresh session needs."""
        for name, value in cookies:
            self.set_cookie(resp, request, name, value)
        return resp

    async def guarded(self, request: Request, render: Any) -> Response:
        """`render(session)` for a logged-in person; otherwise the way to the login page."""
        cookies: list[tuple[str, str]] = []
        try:
            session = self.current(request, cookies)
        except _LoginNeeded:
            return _login_redirect(request)
        resp: Response = await render(session)
        return self.with_cookies(resp, request, cookies)

    # --- what pages show -----------------------------------------------------------------

    def incident_rows(self) -> list[dict[str, Any]]:
        """Open incidents first, the most severe first, then by age; each row holds only its
        incident until `detail_rows` completes the ones a page shows."""
        return [
            {"inc": inc}
            for inc in sorted(
                self.ctx.ingestor.world.incidents.values(),
                key=lambda i: (
                    i.state not in ("open", "acknowledged"),
                    -SEVERITY_RANK.get(i.severity, 0),
                    i.opened_at,
                ),
            )
        ]

    def detail_rows(self, now: datetime, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` with their age and actions: only a page's rows are completed, since each
        asks the action book and there can be tens of thousands of incidents."""
        world = self.ctx.ingestor.world
        actions = world.actions
        for row in rows:
            acts = actions.for_incident(row["inc"].id)
            runs = [r for r in world.investigations.for_incident(row["inc"].id) if not r.shadow]
            # An agent run that could not be trusted is flagged in the list, with why.
            row["escalated"] = runs[-1].escalated if runs else ""
            row["age"] = _age(now, row["inc"].opened_at)
            row["pending"] = sum(1 for a in acts if a.status == "pending_approval")
            row["actions"] = len(acts)
        return rows

    def raw_alerts(self, incident_id: UUID, after: str = "") -> list[dict[str, Any]]:
        """A page of the incident's alerts as they arrived (Alertmanager's field names), by
        fingerprint after `after`."""
        page, _, _ = alert_page(
            self.ctx.ingestor.world, incident_id, after, self.ctx.settings.limits.page_size
        )
        return [
            {
                "status": a.alert.status,
                "labels": a.alert.labels,
                "annotations": a.alert.annotations,
                "startsAt": a.alert.starts_at.isoformat(),
                "generatorURL": a.alert.generator_url,
                "source": a.alert.source,
            }
            for a in page
        ]


def console(request: Request) -> Console:
    """The console of this app (`app.state.console`, set by `create_app`)."""
    c: Console = request.app.state.console
    return c


Con = Annotated[Console, Depends(console)]
router = APIRouter(include_in_schema=False)


def _login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path)
    return RedirectResponse(f"/login?next={target}", status_code=303, headers=HEADERS)


class Refused(Exception):  # noqa: N818 - a page to answer with, not a failure
    """A console form refused before anything was decided (no session, no CSRF token)."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def posted(request: Request, con: Console) -> tuple[Session, dict[str, str]]:
    """The session and fields of a console form post, or `Refused` with a 403 page when it
    has no session or its CSRF token is not this session's (the body is read only for a
    logged-in browser)."""
    got = await session_form(request, con.sessions)
    if got is None:
        raise Refused(HTMLResponse(CSRF_REFUSED, 403, headers=HEADERS))
    return got


def back(data: dict[str, str], default: str) -> RedirectResponse:
    """The redirect after a form: to its `next` field when that is a same-site path."""
    return RedirectResponse(_safe_next(data.get("next"), default), status_code=303, headers=HEADERS)


# --- login ---------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, con: Con, next: str = "/") -> Response:
    nonce = secrets.token_urlsafe(24)
    resp = con.page(request, "login.html", None, next=_safe_next(next, "/"), nonce=nonce)
    con.set_cookie(resp, request, LOGIN_COOKIE, nonce)
    return resp


@router.post("/login")
async def login(request: Request, con: Con) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    # No login cookie, no form of ours: refused before the body is read.
    data = await form_body(request) if nonce else {}
    target = _safe_next(data.get("next"), "/")
    if not nonce or not secrets.compare_digest(nonce, data.get("nonce", "")):
        return con.page(
            request, "login.html", None, 403, next=target, nonce="",
            error="the login form expired or did not come from this console; reload it",
        )
    token = data.get("token", "").strip()
    peer = request.client.host if request.client else None
    wait = con.throttle.wait(peer or "-", time.monotonic())
    if wait:
        log.warning("console login refused: too many failures peer=%s", peer)
        return con.page(
            request, "login.html", None, 429, next=target, nonce="",
            error=f"too many failed logins from {peer}; try again in {math.ceil(wait)}s",
        )
    try:
        ident = con.ctx.auth.identify(f"Bearer {token}", peer, "viewer")
    except AuthError as e:
        con.throttle.failed(peer or "-", time.monotonic())
        log.warning("console login failed peer=%s reason=%s", peer, e.reason)
        again = secrets.token_urlsafe(24)
        refused = con.page(
            request, "login.html", None, 401, next=target, nonce=again, error=e.reason
        )
        con.set_cookie(refused, request, LOGIN_COOKIE, again)
        return refused
    con.throttle.succeeded(peer or "-")
    log.info("console login name=%s role=%s peer=%s", ident.name, ident.role, peer)
    sid, _ = con.sessions.open(Identity(ident.name, ident.role, "console"), token_digest(token))
    resp = RedirectResponse(target, status_code=303, headers=HEADERS)
    con.set_cookie(resp, request, COOKIE, sid)
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


@router.post("/logout")
async def logout(request: Request, con: Con) -> Response:
    try:
        await posted(request, con)
    except Refused as r:
        return r.response
    con.sessions.close(request.cookies.get(COOKIE))
    resp = RedirectResponse("/login", status_code=303, headers=HEADERS)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# --- pages ---------------------------------------------------------------------------


@router.get("/")
async def incidents(
    request: Request, con: Con, page_no: int = Query(0, alias="page", ge=0)
) -> Response:
    async def render(session: Session) -> Response:
        # One page at a time: 60k incidents were a 17 MB page that held the loop. Filters
        # (state, severity, labels, owner, text) are daemon/web/console_work.py's.
        size = con.ctx.settings.limits.page_size
        listing = select_rows(
            con.incident_rows(), con.ctx.ingestor.world, dict(request.query_params), size
        )
        return con.page(
            request, "incidents.html", session,
            rows=con.detail_rows(con.ctx.clock(), listing.rows), page=listing.page,
            more=listing.more, total=listing.total, listing=listing,
        )

    return await con.guarded(request, render)


@router.get("/incidents/{incident_id}")
async def incident(
    request: Request,
    con: Con,
    incident_id: UUID,
    after: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    async def render(session: Session) -> Response:
        world = con.ctx.ingestor.world
        inc: Incident | None = world.incidents.get(incident_id) or world.closed.get(
            incident_id
        )
        if inc is None:
            what = f"incident {incident_id}"
            return con.page(request, "missing.html", session, 404, what=what)
        # One page of alerts (`?after=` the last fingerprint shown) and the newest page_size
        # alert events: an incident can hold limits.max_alerts_per_incident alerts.
        size = con.ctx.settings.limits.page_size
        page, total, nxt = alert_page(world, incident_id, after, size)
        events, left_out = await incident_events(con.ctx.ingestor, incident_id, size)
        streams: list[tuple[str, list[Any]]] = [("incident", events)]
        for inv in world.investigations.for_incident(incident_id):
            events = await asyncio.to_thread(con.ctx.ingestor.log.stream, inv.id)
            streams.append((f"investigation {inv.runbook_id} #{inv.run}", events))
        situation = world.situations.of_incident(incident_id)
        if situation is not None:
            events = await asyncio.to_thread(con.ctx.ingestor.log.stream, situation.id)
            streams.append(("situation", events))
        actions = world.actions.for_incident(incident_id)
        for a in actions:
            events = await asyncio.to_thread(con.ctx.ingestor.log.stream, a.id)
            streams.append((f"action {a.action_id}", events))
        return con.page(
            request,
            "incident.html",
            session,
            inc=inc,
            age=_age(con.ctx.clock(), inc.opened_at),
            alerts=con.raw_alerts(incident_id, after),
            alerts_shown=len(page),
            alerts_total=total,
            alerts_next=quote(nxt) if nxt else "",
            alerts_first=not after,
            alert_events_left_out=left_out,
            investigation=investigation_view(world, incident_id),
            situation=situation_of(world, incident_id),
            actions=actions,
            groups=group_rows(timeline(streams)),  # agent steps, actions: collapsible
            now=con.ctx.clock(),
        )

    return await con.guarded(request, render)


@router.get("/approvals")
async def approvals(request: Request, con: Con) -> Response:
    async def render(session: Session) -> Response:
        world, now = con.ctx.ingestor.world, con.ctx.clock()
        items = [
            {
                "a": a,
                "inc": world.incidents.get(a.incident_id),
                "alerts": con.raw_alerts(a.incident_id),
                "expires_in": format_duration(a.expires_at - now) if a.expires_at else "-",
            }
            for a in world.actions.pending()
        ]
        return con.page(request, "approvals.html", session, items=items)

    return await con.guarded(request, render)


async def _decide(request: Request, con: Console, action_id: UUID, approve: bool) -> Response:
    try:
        session, data = await posted(request, con)
    except Refused as r:  # refused before anything is decided
        return r.response
    target = _safe_next(data.get("next"), "/approvals")
    ident = session.identity
    try:
        if approve:
            comment = data.get("comment", "")
            entry = await approve_action(con.ctx.ingestor, action_id, ident, comment)
            done = "approved" if entry.status == "approved" else "approval recorded"
        else:
            reason = data.get("reason", "").strip()
            if not reason:
                raise Rejected("a rejection needs a reason", 422)
            entry = await reject_action(con.ctx.ingestor, action_id, ident, reason)
            done = "rejected"
        what = entry.plan.summary if entry.plan else entry.action_id
        session.flash("ok", f"{done}: {what}")
    except Rejected as e:
        session.flash("error", e.reason)
    return RedirectResponse(target, status_code=303, headers=HEADERS)


@router.post("/actions/{action_id}/approve")
async def approve(request: Request, con: Con, action_id: UUID) -> Response:
    return await _decide(request, con, action_id, True)


@router.post("/actions/{action_id}/reject")
async def reject(request: Request, con: Con, action_id: UUID) -> Response:
    return await _decide(request, con, action_id, False)


@router.get("/console.css")
async def css(con: Con) -> Response:
    text = con.env.loader.get_source(con.env, "console.css")[0]  # type: ignore[union-attr]
    return Response(
        text, media_type="text/css", headers={**HEADERS, "Cache-Control": "max-age=300"}
    )
