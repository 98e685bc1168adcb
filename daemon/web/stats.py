"""Outcome figures from the log: `GET /api/v1/stats` and the console's `/stats` page with
server-side SVG plots (no charting library, no CDN).

The fold (daemon/domain/outcomes.py) is kept between requests and continued from the last
log position it read, decoding only the event kinds it looks at.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from daemon.actions.views import book_view
from daemon.config.auth import Identity
from daemon.domain import Rejected, registry
from daemon.domain.durations import format_duration, parse_duration
from daemon.domain.outcomes import Outcomes, figures
from daemon.engine.ingest import Ingestor
from daemon.web.console import HEADERS
from daemon.web.console_work import console_session
from daemon.web.sessions import COOKIE, Sessions

if TYPE_CHECKING:
    from daemon.web.context import ApiContext

PAGE = 5000
# The kinds the fold looks at; everything else is skipped undecoded.
FOLDED = frozenset(
    {
        "IncidentOpened",
        "AlertFired",
        "IncidentSeverityChanged",
        "IncidentAcknowledged",
        "IncidentResolved",
        "IncidentReopened",
        "InvestigationStarted",
        "InvestigationConcluded",
        "InvestigationEscalated",
        "ActionProposed",
        "ApprovalRequested",
        "ActionApproved",
        "ActionRejected",
        "ApprovalExpired",
        "ActionSucceeded",
        "ActionFailed",
        "ActionOutcomeUnknown",
        "VerificationPassed",
        "VerificationFailed",
        "RolledBack",
    }
)
_HEADERS = HEADERS


class OutcomeCache:
    """The fold of the whole log so far, and where it stopped."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()
        self.position = 0
        self.lock = asyncio.Lock()

    def _catch_up(self, ing: Ingestor) -> None:
        while True:
            rows = ing.log.read_raw(self.position, PAGE)
            for position, topic, state, _, _ in rows:
                self.position = position
                if registry.event_name(topic) in FOLDED:
                    self.outcomes.apply(registry.decode(topic, state))
            if len(rows) < PAGE:
                return

    async def current(self, ing: Ingestor) -> Outcomes:
        """The fold up to the newest committed event."""
        async with self.lock:
            await asyncio.to_thread(self._catch_up, ing)
            return self.outcomes


def period(since: str, until: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """`since`/`until` as a duration back from now (7d) or a time; "" for open ends."""

    def one(text: str, name: str) -> datetime | None:
        if not text:
            return None
        try:
            return now - parse_duration(text)
        except ValueError:
            pass
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(
                f"{name}: {text!r} is neither a duration (7d) nor a time (2026-03-01T00:00:00Z)",
                422,
            ) from None
        if at.tzinfo is None:
            raise Rejected(f"{name}: give a time zone", 422)
        return at

    return one(since, "since"), one(until, "until")


# --- plots -------------------------------------------------------------------------------

_W, _ROW, _LEFT = 640, 22, 160


def bars(title: str, rows: list[tuple[str, float | None, float | None]]) -> Markup:
    """A horizontal bar chart of p50 (solid) and p90 (light) seconds per group, as SVG."""
    top = max([v for _, a, b in rows for v in (a, b) if v is not None] or [1.0]) or 1.0
    height = 30 + _ROW * max(len(rows), 1)
    parts = [
        f'<svg class="plot" role="img" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" class="plot-title">{escape(title)} (p50 dark, p90 light)</text>',
    ]
    if not rows:
        parts.append('<text x="0" y="40" class="muted">no data in this period</text>')
    for i, (label, p50, p90) in enumerate(rows):
        y = 24 + i * _ROW
        parts.append(f'<text x="0" y="{y + 14}">{escape(label[:24])}</text>')
        for value, cls in ((p90, "p90"), (p50, "p50")):
            if value is None:
                continue
            width = max(1.0, (_W - _LEFT - 70) * value / top)
            parts.append(
                f'<rect class="{cls}" x="{_LEFT}" y="{y + 3}" width="{width:.1f}" height="14">'
                f"<title>{cls} {format_duration_s(value)}</title></rect>"
            )
        if p50 is not None:
            parts.append(
                f'<text x="{_W - 65}" y="{y + 14}">{format_duration_s(p50)}'
                + (f" / {format_duration_s(p90)}" if p90 is not None else "")
                + "</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label in it went through escape()


def format_duration_s(seconds: float) -> str:
    """Seconds as `3m`, `1h5m`."""
    return format_duration(timedelta(seconds=round(seconds)))


# --- routes ------------------------------------------------------------------------------


def stats_router(ctx: ApiContext, sessions: Sessions) -> APIRouter:
    """`/api/v1/stats` and the console's `/stats` page."""
    router = APIRouter()
    ing = ctx.ingestor
    cache = OutcomeCache()
    env = Environment(
        loader=PackageLoader("daemon.web", "templates"), autoescape=select_autoescape(["html"])
    )

    async def compute(by: str, since: str, until: str) -> dict[str, Any]:
        if by not in ("service", "runbook", "severity", "all"):
            raise Rejected("by: one of service, runbook, severity, all", 422)
        start, end = period(since, until, ctx.clock())
        groups = figures(await cache.current(ing), by=by, since=start, until=end)  # type: ignore[arg-type]
        return {
            "by": by,
            "since": start.isoformat() if start else None,
            "until": end.isoformat() if end else None,
            "groups": groups,
        }

    @router.get("/api/v1/stats")
    async def stats(
        request: Request,
        by: Literal["service", "runbook", "severity", "all"] = "all",
        since: str = "",
        until: str = "",
    ) -> dict[str, Any]:
        peer = request.client.host if request.client else None
        ctx.auth.identify(request.headers.get("authorization"), peer, "viewer")
        return await compute(by, since, until)

    @router.get("/stats", include_in_schema=False)
    async def page(request: Request, by: str = "service", since: str = "30d") -> Response:
        session, new_sid = console_session(request, ctx, sessions)
        if session is None:
            return RedirectResponse("/login?next=/stats", status_code=303, headers=_HEADERS)
        try:
            data = await compute(by, since, "")
            problem = ""
        except Rejected as e:
            data, problem = await compute("service", "30d", ""), e.reason
        groups: dict[str, Any] = data["groups"]

        def plot(title: str, key: str) -> Markup:
            return bars(title, [(g, v[key]["p50"], v[key]["p90"]) for g, v in groups.items()])

        me: Identity = session.identity
        html = env.get_template("stats.html").render(
            me=me,
            csrf=session.csrf,
            flashes=session.take_flashes(),
            execution=book_view(ing.world.actions),
            pending=len(ing.world.actions.pending()),
            path="/stats",
            position=ing.world.position,
            by=data["by"],
            since=since,
            problem=problem,
            groups=groups,
            plots=[
                plot("Time to acknowledge", "time_to_acknowledge"),
                plot("Time to approve", "time_to_approve"),
                plot("Time to resolve", "time_to_resolve"),
            ],
        )
        resp = HTMLResponse(html, headers=_HEADERS)
        if new_sid:
            resp.set_cookie(COOKIE, new_sid, httponly=True, samesite="strict", path="/")
        return resp

    return router
