"""The HTTP API: the app around a running daemon, and incidents, silences, the raw log, health.

Every router is module-level; its routes receive the daemon as `ctx: Ctx` (see
`daemon.web.context`). Alert intake lives in `daemon.intake.routes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from eventsourcing.persistence import PersistenceError
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.actions.approvals import SlackApprovals
from daemon.agent.views import investigation_view
from daemon.config.auth import AuthError
from daemon.config.problems import problems as validation_problems
from daemon.domain import (
    Acknowledge,
    CreateSilence,
    EndSilence,
    Incident,
    Matcher,
    Rejected,
    ResolveIncident,
    registry,
)
from daemon.domain.durations import parse_duration
from daemon.domain.matchers import Op, matches_all, silences_everything
from daemon.domain.state import AlertState
from daemon.engine.store import StoreUnavailable
from daemon.intake.routes import record_dead_letter
from daemon.intake.routes import router as intake_router
from daemon.web.actions import router as actions_router
from daemon.web.alertmanager import alertmanager_router
from daemon.web.console import Console
from daemon.web.console import router as console_router
from daemon.web.console_runbooks import router as console_runbooks_router
from daemon.web.console_situations import router as console_situations_router
from daemon.web.console_work import console_work_router
from daemon.web.context import ApiContext, Ctx
from daemon.web.forward import LeaderForwarding
from daemon.web.incidents import incidents_router, story_and_events
from daemon.web.limits import BodyLimit, Scope
from daemon.web.openapi import declare_bearer, docs_url
from daemon.web.paging import page_of
from daemon.web.runbooks import router as runbooks_router
from daemon.web.situations import router as situations_router
from daemon.web.slack import slack_router
from daemon.web.sso import TrustedProxies
from daemon.web.stats import stats_router
from daemon.web.story import alert_page

log = logging.getLogger("watchkeeper.api")


class _Problem(Exception):  # noqa: N818
    def __init__(self, status: int, error: str, problems: list[str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.problems = status, error, problems or []


class CommentIn(BaseModel):
    """A comment for ack/resolve."""

    model_config = ConfigDict(extra="ignore")
    comment: str = ""


class MatcherIn(BaseModel):
    """Alertmanager's matcher shape."""

    name: str
    value: str
    isRegex: bool = False  # noqa: N815
    isEqual: bool = True  # noqa: N815


class SilenceIn(BaseModel):
    """A silence as Alertmanager's API v2 takes it; matchers may also be strings (`a=~"b"`)."""

    model_config = ConfigDict(extra="ignore")
    matchers: list[MatcherIn | str] = Field(min_length=1)
    startsAt: datetime | None = None  # noqa: N815
    endsAt: datetime | None = None  # noqa: N815
    duration: str | None = None
    createdBy: str = ""  # noqa: N815 - accepted for Alertmanager clients, never recorded
    comment: str = ""
    # A silence that matches (nearly) every alert needs an admin and this flag.
    force: bool = False


def _to_matcher(m: MatcherIn | str) -> Matcher:
    if isinstance(m, str):
        return Matcher.parse(m)
    op: Op = ("=~" if m.isEqual else "!~") if m.isRegex else ("=" if m.isEqual else "!=")
    return Matcher(name=m.name, op=op, value=m.value)


def alert_view(a: AlertState) -> dict[str, Any]:
    """One of an incident's alerts as the API returns it."""
    return {
        "fingerprint": a.alert.fingerprint,
        "status": a.alert.status,
        "labels": a.alert.labels,
        "annotations": a.alert.annotations,
        "starts_at": a.alert.starts_at.isoformat(),
        "ends_at": a.alert.ends_at.isoformat() if a.alert.ends_at else None,
        "generator_url": a.alert.generator_url,
        "source": a.alert.source,
    }


def incident_view(inc: Incident) -> dict[str, Any]:
    """An incident as the API returns it."""
    out = inc.model_dump(mode="json")
    out["id"] = str(inc.id)
    return out


def with_alerts(ctx: ApiContext, view: dict[str, Any]) -> dict[str, Any]:
    """`view` with the first page of its incident's alerts, their count and the next cursor."""
    page, total, nxt = alert_page(
        ctx.ingestor.world, UUID(view["id"]), "", ctx.settings.limits.page_size
    )
    view["alerts"] = [alert_view(a) for a in page]
    view["alerts_count"] = total
    view["alerts_next"] = nxt
    return view


def event_view(position: int | None, event: Any) -> dict[str, Any]:
    """One event as the API returns it."""
    data = event.model_dump(mode="json")
    return {
        "position": position,
        "type": type(event).__name__,
        "stream": data.pop("originator_id"),
        "version": data.pop("originator_version"),
        "at": data.pop("timestamp"),
        "data": data,
    }


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the FastAPI application around a running daemon (routes read it as `Ctx`)."""
    app = FastAPI(
        title="watchkeeper", version="0.1.0", docs_url=docs_url(ctx.settings.http.api_docs),
        redoc_url=None,
    )
    declare_bearer(app)  # daemon/web/openapi.py
    app.state.ctx = ctx
    # Slack buttons; Approve/Reject go to the actions stage (daemon/actions/approvals.py).
    app.include_router(slack_router(ctx, SlackApprovals(ctx.ingestor)))
    app.include_router(actions_router)
    app.include_router(alertmanager_router(ctx))  # Alertmanager's API v2, for amtool
    app.include_router(situations_router)
    app.include_router(runbooks_router)
    # The review console at / (daemon/web/console.py).
    app.state.console = Console(ctx)
    app.include_router(console_router)
    app.include_router(console_situations_router)  # link/unlink by hand
    app.include_router(console_runbooks_router)  # shadow runs, promotion
    # Working incidents (daemon/web/incidents.py), from the console too (console_work.py),
    # and outcome figures (stats.py); the console's forms share its sessions.
    app.include_router(incidents_router(ctx))
    app.include_router(console_work_router(ctx, app.state.console.sessions))
    app.include_router(stats_router(ctx, app.state.console.sessions))
    # Alert intake: Alertmanager API v2 and webhook (daemon/intake/routes.py).
    app.include_router(intake_router)
    app.include_router(router)
    app.add_exception_handler(_Problem, _problem)  # type: ignore[arg-type]
    app.add_exception_handler(AuthError, _auth)  # type: ignore[arg-type]
    app.add_exception_handler(Rejected, _rejected)  # type: ignore[arg-type]
    app.add_exception_handler(StoreUnavailable, _store)  # type: ignore[arg-type]
    app.add_exception_handler(PersistenceError, _store_read)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]

    async def body_refused(scope: Scope, head: bytes, size: int) -> None:
        # An oversized alert post is a refused intake: dead-lettered, if its sender may post.
        source = _INTAKE_PATHS.get(scope.get("path", ""))
        if source is None or scope.get("method") != "POST":  # GET /api/v2/alerts reads
            return
        headers = dict(scope.get("headers", []))
        auth = headers.get(b"authorization")
        peer = (scope.get("client") or (None,))[0]
        try:
            ctx.auth.check_ingest(auth.decode("latin-1") if auth else None, peer)
        except AuthError:
            return
        limit = ctx.settings.http.max_body_bytes
        ctx.metrics.alerts_rejected.labels(source, "too_large").inc()
        reason = f"body of {size} bytes exceeds http.max_body_bytes ({limit})"
        await record_dead_letter(ctx, source, reason, head, size)

    # Replicas: a follower sends writes to the leader (innermost: after the client address
    # is known and the body bounded).
    app.add_middleware(
        LeaderForwarding,
        leader_url=ctx.leader_url,
        timeout=lambda: ctx.settings.tuning.commit_timeout.total_seconds() + 5.0,
        sign_on_headers=lambda: frozenset(
            h.lower()
            for h in (ctx.settings.auth.sso.user_header, ctx.settings.auth.sso.email_header,
                      ctx.settings.auth.sso.groups_header)
        ),
    )
    # X-Forwarded-For and proxy single sign-on, believed from http.trusted_proxies only.
    app.add_middleware(TrustedProxies, settings=ctx.settings)
    # Outermost but for the error handler: no route reads more than the limit.
    app.add_middleware(
        BodyLimit, limit=lambda: ctx.settings.http.max_body_bytes, on_refused=body_refused
    )
    return app


_INTAKE_PATHS = {"/api/v2/alerts": "api_v2", "/api/v1/webhook/alertmanager": "alertmanager"}


# --- refusals, all in one shape: {"error": ..., "problems": [...]} ----------------------


async def _problem(_: Request, exc: _Problem) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.error}
    if exc.problems:
        body["problems"] = exc.problems
    return JSONResponse(body, status_code=exc.status)


async def _auth(request: Request, exc: AuthError) -> JSONResponse:
    peer = request.client.host if request.client else "-"
    log.warning(
        "refused status=%d %s %s peer=%s reason=%s",
        exc.status, request.method, request.url.path, peer, exc.reason,
    )
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)


async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
    # Nothing was committed: senders (Prometheus, Alertmanager) retry on a 5xx.
    ctx: ApiContext = request.app.state.ctx
    retry = max(1, math.ceil(ctx.settings.tuning.reconnect_max_backoff.total_seconds()))
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(retry)})


async def _store_read(request: Request, exc: PersistenceError) -> JSONResponse:
    # A read from the log (timeline, events) while the store is gone: say so, not 500.
    return await _store(request, StoreUnavailable(f"event store unavailable: {exc}"))


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    # Same shape as every other refusal: {"error": ...}, naming where the problem is.
    problems = validation_problems(exc.errors())
    return JSONResponse(
        {"error": "invalid request: " + "; ".join(problems), "problems": problems},
        status_code=422,
    )


# --- incidents, silences, the raw log, health ---------------------------------------------

router = APIRouter()


@router.get("/api/v1/dead-letters")
async def dead_letters(request: Request, ctx: Ctx, limit: int = 100) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    items = list(ctx.ingestor.projections.dead_letters)[-max(1, min(limit, 1000)) :]
    return {"dead_letters": [d.model_dump() for d in reversed(items)]}


@router.get("/api/v1/incidents")
async def incidents(
    request: Request,
    ctx: Ctx,
    *,
    state: Annotated[list[str] | None, Query()] = None,
    match: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: str = "",
) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    try:
        matchers = [Matcher.parse(m) for m in match or []]
    except (ValueError, ValidationError) as e:
        raise _Problem(400, f"match: {e}") from None
    world = ctx.ingestor.world
    pool = list(world.incidents.values())
    if state and "closed" in state:
        pool += list(world.closed.values())
    found = []
    for inc in pool:
        if state and inc.state not in state:
            continue
        # Alerts carry the group labels and more; matching the group labels alone would
        # let a negative matcher (severity!="critical") pass on a label they lack.
        label_sets = [a.alert.labels for a in world.incident_alerts(inc.id)]
        if matchers and not any(
            matches_all(matchers, labels) for labels in label_sets or [inc.group_labels]
        ):
            continue
        found.append(inc)
    page, nxt = page_of(
        found, lambda i: (i.opened_at, str(i.id)), cursor,
        limit or ctx.settings.limits.page_size,
    )
    return {"incidents": [incident_view(i) for i in page], "next": nxt}


@router.get("/api/v1/incidents/{incident_id}")
async def incident(request: Request, ctx: Ctx, incident_id: UUID) -> dict[str, Any]:
    """The incident with its first page of alerts (`alerts_count` in all, `alerts_next` the
    cursor of `/alerts`) and its timeline with the newest `page_size` alert events."""
    ctx.identify(request, "viewer")
    # The whole story, bounded: agent steps, actions, notifications (daemon/web/story.py).
    story, events = await story_and_events(ctx, incident_id)
    world = ctx.ingestor.world
    inc = world.incidents.get(incident_id) or world.closed.get(incident_id)
    view = with_alerts(
        ctx,
        incident_view(inc)
        if inc is not None
        else {k: v for k, v in story.items() if k not in ("alerts", "story")},
    )
    view["timeline"] = [event_view(None, e) for e in events]
    view["investigation"] = investigation_view(world, incident_id)
    view.update({k: v for k, v in story.items() if k not in view})
    return view


@router.get("/api/v1/incidents/{incident_id}/alerts")
async def incident_alerts(
    request: Request,
    ctx: Ctx,
    incident_id: UUID,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    cursor: Annotated[str, Query(max_length=256)] = "",
) -> dict[str, Any]:
    """The incident's alerts a page at a time, by fingerprint; `next` is the next cursor.
    An alert is up to limits.max_alert_bytes (8 KiB), so a page is at most 1000 of them:
    10,000 in one response took the daemon past MemoryMax (bench/restart_memory.py)."""
    ctx.identify(request, "viewer")
    world = ctx.ingestor.world
    if incident_id not in world.incidents and incident_id not in world.closed:
        raise _Problem(404, f"no incident {incident_id} held (a closed one has no alerts)")
    size = limit or ctx.settings.limits.page_size
    page, total, nxt = alert_page(world, incident_id, cursor, size)
    return {"alerts": [alert_view(a) for a in page], "total": total, "next": nxt}


@router.post("/api/v1/incidents/{incident_id}/ack")
async def ack(request: Request, ctx: Ctx, incident_id: UUID) -> dict[str, Any]:
    ident = ctx.identify(request, "responder")
    body = await _json_model(request, CommentIn)
    await ctx.ingestor.execute(Acknowledge(incident_id, ident.name, body.comment))
    return with_alerts(ctx, incident_view(ctx.ingestor.world.incidents[incident_id]))


@router.post("/api/v1/incidents/{incident_id}/resolve")
async def resolve(request: Request, ctx: Ctx, incident_id: UUID) -> dict[str, Any]:
    ident = ctx.identify(request, "responder")
    body = await _json_model(request, CommentIn)
    await ctx.ingestor.execute(ResolveIncident(incident_id, ident.name, body.comment))
    inc = ctx.ingestor.world.incidents.get(incident_id) or ctx.ingestor.world.closed[incident_id]
    return with_alerts(ctx, incident_view(inc))


@router.post("/api/v1/silences")
async def add_silence(request: Request, ctx: Ctx) -> JSONResponse:
    ident = ctx.identify(request, "responder")
    body = await _json_model(request, SilenceIn)
    now = ctx.clock()
    try:
        matchers = tuple(_to_matcher(m) for m in body.matchers)
        starts = body.startsAt or now
        if body.endsAt is not None:
            ends = body.endsAt
        else:
            length = parse_duration(body.duration) if body.duration else timedelta(hours=1)
            ends = starts + length
    except (ValueError, ValidationError, OverflowError) as e:
        raise _Problem(422, f"invalid silence: {e}") from None
    longest = ctx.settings.limits.max_silence
    if ends - max(starts, now) > longest:
        raise _Problem(422, f"invalid silence: longer than limits.max_silence ({longest})")
    # One that matches even an empty label set the domain refuses outright (422).
    broad = silences_everything(matchers) and not matches_all(matchers, {})
    if broad and not (body.force and ident.can("admin")):
        raise _Problem(
            403,
            "this silence would match every alert; an admin must send force=true "
            "(watchkeeper silence add --force)",
        )
    sid = uuid4()
    # Recorded as the authenticated caller, whatever createdBy the body claims.
    await ctx.ingestor.execute(CreateSilence(sid, matchers, starts, ends, ident.name, body.comment))
    return JSONResponse({"silenceID": str(sid)}, status_code=200)


@router.get("/api/v1/silences")
async def silences(
    request: Request,
    ctx: Ctx,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> dict[str, Any]:
    """Silences, newest first, a page at a time (`next` is the next page's cursor)."""
    ctx.identify(request, "viewer")
    now = ctx.clock()
    page, nxt = page_of(
        list(ctx.ingestor.world.silences.values()),
        lambda s: (s.starts_at, str(s.id)),
        cursor,
        limit or ctx.settings.limits.page_size,
    )
    return {
        "silences": [
            {
                "id": str(s.id),
                "state": s.state(now),
                "matchers": [str(m) for m in s.matchers],
                "starts_at": s.starts_at.isoformat(),
                "ends_at": s.ends_at.isoformat(),
                "created_by": s.created_by,
                "comment": s.comment,
            }
            for s in page
        ],
        "next": nxt,
    }


@router.delete("/api/v1/silences/{silence_id}")
async def delete_silence(request: Request, ctx: Ctx, silence_id: UUID) -> dict[str, Any]:
    ident = ctx.identify(request, "responder")
    await ctx.ingestor.execute(EndSilence(silence_id, ident.name))
    return {"status": "success"}


@router.get("/api/v1/events")
async def events(request: Request, ctx: Ctx, after: int = 0, limit: int = 100) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    if not 0 <= after < 2**63:  # a position SQLite can hold; beyond it was a 500
        raise _Problem(400, "after: must be >= 0" if after < 0 else "after: too large")
    rows = await asyncio.to_thread(ctx.ingestor.log.read_raw, after, max(1, min(limit, 1000)))
    out = [
        {
            "position": pos,
            "type": registry.event_name(topic),
            "stream": str(oid),
            "version": ver,
            "data": json.loads(state),
        }
        for pos, topic, state, oid, ver in rows
    ]
    nxt = out[-1]["position"] if out else after
    return {"events": out, "next": nxt}


@router.get("/api/v1/status")
async def status(request: Request, ctx: Ctx) -> dict[str, Any]:
    ctx.identify(request, "viewer")
    return ctx.health()


@router.get("/healthz")
async def healthz(request: Request, ctx: Ctx) -> JSONResponse:
    h = ctx.health()
    code = 200 if h["healthy"] else 503
    try:
        ctx.identify(request, "viewer")
    except AuthError:
        # Who paused and the sources' error texts are for viewers; probes get the verdict.
        return JSONResponse({"healthy": h["healthy"]}, status_code=code)
    return JSONResponse(h, status_code=code)


@router.get("/readyz")
async def readyz(ctx: Ctx) -> PlainTextResponse:
    if not ctx.ingestor.ready:
        return PlainTextResponse("starting: rebuilding state from the event log\n", status_code=503)
    if not ctx.ingestor.store.up:
        return PlainTextResponse(f"not ready: {ctx.ingestor.store.problem()}\n", status_code=503)
    h = ctx.health()
    why = h.get("unready_reason")
    if why:  # the log is loaded, but the agent cannot work, or no replica leads
        return PlainTextResponse(f"not ready: {why}\n", status_code=503)
    rep = h.get("replica") or {}
    if not rep.get("replicated"):
        return PlainTextResponse("ready\n")
    leader = (rep.get("leader") or {}).get("address", "")
    return PlainTextResponse(
        f"ready: {rep['role']}, epoch {rep.get('epoch')}, leader {leader}, "
        f"lag {rep.get('lag_seconds', 0.0):.1f}s\n"
    )


@router.get("/leaderz")
async def leaderz(ctx: Ctx) -> PlainTextResponse:
    """200 on the replica that leads (commits) now, 503 on a follower: for load balancers
    that send the console, whose sessions live in one process, to the leader."""
    rep = ctx.health().get("replica") or {}
    if rep.get("role", "leader") == "leader" and ctx.ingestor.ready:
        if rep.get("epoch") is None:
            # SQLite: one daemon per store (a file lock), so it leads once ready.
            return PlainTextResponse("leader: the only daemon on this store\n")
        return PlainTextResponse(f"leader, epoch {rep.get('epoch')}\n")
    leader = (rep.get("leader") or {}).get("address") or "unknown"
    return PlainTextResponse(f"follower; the leader is {leader}\n", status_code=503)


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _json_model(request: Request, model: type[Any]) -> Any:
    raw = await request.body()
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        problems = validation_problems(e.errors(include_url=False))
        raise _Problem(422, "invalid request body: " + "; ".join(problems), problems) from None
