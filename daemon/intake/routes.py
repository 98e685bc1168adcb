"""The HTTP intake: Alertmanager's API v2 (`POST /api/v2/alerts`, what Prometheus sends) and
its webhook (`POST /api/v1/webhook/alertmanager`, version 4).

A payload that cannot be read is refused with the reason (400, or 413 when too large) and
kept as a dead letter, like a stream payload. The routes read the running daemon from
`request.app.state.ctx` (set by `daemon.web.app.create_app`) through the `IntakeContext`
protocol, so intake does not import the web layer above it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Protocol
from uuid import uuid4

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from daemon.config.auth import Authenticator
from daemon.config.settings import Settings
from daemon.domain import ReceiveAlert
from daemon.domain.events import DeadLetterRecorded
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import StoreUnavailable
from daemon.intake.formats import PayloadError, parse_postable_alerts, parse_webhook
from daemon.intake.payloads import DEAD_LETTER_BYTES, dead_letter

log = logging.getLogger("watchkeeper.api")


class IntakeContext(Protocol):
    """What the intake needs from the running daemon (`daemon.web.context.ApiContext` has it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def ingestor(self) -> Ingestor: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def auth(self) -> Authenticator: ...


def intake_context(request: Request) -> IntakeContext:
    """The running daemon, as the app was built around it."""
    ctx: IntakeContext = request.app.state.ctx
    return ctx


Ctx = Annotated[IntakeContext, Depends(intake_context)]
router = APIRouter()


class _Refused(Exception):  # noqa: N818 - an answer, not a failure
    def __init__(self, status: int, error: str, problems: list[str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.problems = status, error, problems or []

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.error}
        if self.problems:
            body["problems"] = self.problems
        return JSONResponse(body, status_code=self.status)


async def record_dead_letter(
    ctx: IntakeContext, source: str, reason: str, body: bytes, size: int
) -> None:
    """Keep refused input (capped) as a dead letter, so nothing is silently lost."""
    ctx.metrics.dead_letters.labels(source).inc()
    try:
        await ctx.ingestor.submit([dead_letter(uuid4(), source, [reason], body, size)])
    except StoreUnavailable:
        log.exception("could not record dead letter source=%s", source)


async def _read_body(ctx: IntakeContext, request: Request, source: str) -> bytes:
    limit = ctx.settings.http.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        head = b""
        async for chunk in request.stream():
            head += chunk
            if len(head) >= DEAD_LETTER_BYTES:
                break
        await _too_large(ctx, source, head, int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            await _too_large(ctx, source, bytes(body), len(body), limit)
    return bytes(body)


async def _too_large(ctx: IntakeContext, source: str, head: bytes, size: int, limit: int) -> None:
    reason = f"body of {size} bytes exceeds http.max_body_bytes ({limit})"
    ctx.metrics.alerts_rejected.labels(source, "too_large").inc()
    await record_dead_letter(ctx, source, reason, head, size)
    raise _Refused(413, reason)


async def _ingest(
    ctx: IntakeContext, request: Request, source: str, parse: Callable[[bytes], list[Any]]
) -> dict[str, Any]:
    peer = request.client.host if request.client else None
    ctx.auth.check_ingest(request.headers.get("authorization"), peer)
    body = await _read_body(ctx, request, source)
    try:
        alerts = parse(body)
    except PayloadError as e:
        ctx.metrics.alerts_rejected.labels(source, "invalid").inc()
        reason = "; ".join(e.problems)
        await record_dead_letter(ctx, source, reason, body, len(body))
        raise _Refused(400, "invalid payload: " + reason, e.problems) from None
    events = await ctx.ingestor.submit([ReceiveAlert(a) for a in alerts])
    ctx.metrics.alerts_received.labels(source).inc(len(alerts))
    # A firing alert the world does not hold was refused at a hot-set limit (its dead
    # letter is among the events, or was recorded on an earlier refusal).
    held = ctx.ingestor.world.alerts
    refused = [a for a in alerts if a.status == "firing" and a.fingerprint not in held]
    if refused:
        # The rest are held; these met a limit of the hot set.
        ctx.metrics.alerts_rejected.labels(source, "limit").inc(len(refused))
        why = [e.reason for e in events if isinstance(e, DeadLetterRecorded)] or [
            f"{len(refused)} alerts refused at a limit of the hot set (dead-lettered "
            "within the last hour)"
        ]
        raise _Refused(429, "refused at a limit: " + "; ".join(why[:5]), why[:20])
    return {"status": "success", "alerts": len(alerts), "events": len(events)}


@router.post("/api/v2/alerts")
async def post_alerts_v2(request: Request, ctx: Ctx) -> Response:
    """Alerts as Prometheus posts them to Alertmanager."""
    rt = ctx.settings.grouping.resolve_timeout
    try:
        await _ingest(
            ctx,
            request,
            "api_v2",
            lambda b: parse_postable_alerts(
                b, now=ctx.clock(), resolve_timeout=rt, limits=ctx.settings.limits.alert_limits()
            ),
        )
    except _Refused as e:
        return e.response()
    # Alertmanager answers 200 with an empty body; Prometheus only looks at the status.
    return Response(status_code=200)


@router.post("/api/v1/webhook/alertmanager", response_model=dict[str, Any])
async def post_webhook(request: Request, ctx: Ctx) -> dict[str, Any] | JSONResponse:
    """An Alertmanager webhook notification (version 4)."""
    try:
        limits = ctx.settings.limits.alert_limits()
        return await _ingest(
            ctx, request, "alertmanager", lambda b: parse_webhook(b, now=ctx.clock(), limits=limits)
        )
    except _Refused as e:
        return e.response()
