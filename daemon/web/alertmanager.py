"""Alertmanager's API v2, read side and silences, so amtool, karma and Grafana's Alertmanager
data source work against watchkeeper.

Shapes follow Alertmanager's OpenAPI spec (api/v2/openapi.yaml, v0.25): alerts, alert
groups, silences and status. Roles are those of the v1 equivalents: reading needs a viewer,
adding and expiring silences a responder. Errors are JSON strings, as Alertmanager's are, so
amtool prints the reason. There is one receiver, `watchkeeper`, and no inhibition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon import installed_version
from daemon.config.auth import Identity
from daemon.domain.commands import CreateSilence, EndSilence
from daemon.domain.matchers import Matcher, matches_all, silences_everything
from daemon.domain.state import AlertState, Silence

if TYPE_CHECKING:
    from daemon.web.context import ApiContext

RECEIVER = "watchkeeper"
_STARTED = time.time()


class AmMatcher(BaseModel):
    """Alertmanager's matcher."""

    name: str = Field(min_length=1)
    value: str
    isRegex: bool  # noqa: N815 - Alertmanager's field names
    isEqual: bool = True  # noqa: N815


class PostableSilence(BaseModel):
    """A silence as amtool posts it (`id` set: replace that silence)."""

    model_config = ConfigDict(extra="ignore")
    id: UUID | None = None
    matchers: list[AmMatcher] = Field(min_length=1)
    startsAt: datetime  # noqa: N815
    endsAt: datetime  # noqa: N815
    createdBy: str = ""  # noqa: N815 - the authenticated caller is recorded instead
    comment: str = ""


# --- response shapes (Alertmanager's OpenAPI definitions), for /openapi.json -------------


class Receiver(BaseModel):
    """A receiver's name."""

    name: str


class AlertStatus(BaseModel):
    """Whether an alert is active or suppressed, and by what."""

    state: Literal["unprocessed", "active", "suppressed"]
    silencedBy: list[str]  # noqa: N815
    inhibitedBy: list[str]  # noqa: N815


class GettableAlert(BaseModel):
    """An alert as `GET /api/v2/alerts` lists it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str  # noqa: N815
    endsAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    generatorURL: str  # noqa: N815
    fingerprint: str
    receivers: list[Receiver]
    status: AlertStatus


class AlertGroup(BaseModel):
    """Alerts grouped by their grouping labels."""

    labels: dict[str, str]
    receiver: Receiver
    alerts: list[GettableAlert]


class SilenceStatus(BaseModel):
    """A silence's state now."""

    state: Literal["active", "pending", "expired"]


class GettableSilence(BaseModel):
    """A silence as `GET /api/v2/silences` lists it."""

    id: str
    status: SilenceStatus
    updatedAt: str  # noqa: N815
    comment: str
    createdBy: str  # noqa: N815
    startsAt: str  # noqa: N815
    endsAt: str  # noqa: N815
    matchers: list[AmMatcher]


class SilenceCreated(BaseModel):
    """The id of a new silence."""

    silenceID: str  # noqa: N815


class AlertmanagerStatus(BaseModel):
    """`GET /api/v2/status`: cluster (none), config, uptime and version."""

    cluster: dict[str, Any]
    config: dict[str, str]
    uptime: str
    versionInfo: dict[str, str]  # noqa: N815


class AmProblem(Exception):  # noqa: N818 - carries the answer
    """An error answered as Alertmanager does: a JSON string with the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def to_matcher(m: AmMatcher) -> Matcher:
    """Alertmanager's matcher as ours."""
    if m.isRegex:
        return Matcher(name=m.name, op="=~" if m.isEqual else "!~", value=m.value)
    return Matcher(name=m.name, op="=" if m.isEqual else "!=", value=m.value)


def from_matcher(m: Matcher) -> dict[str, Any]:
    """Our matcher in Alertmanager's shape."""
    return {
        "name": m.name,
        "value": m.value,
        "isRegex": m.op in ("=~", "!~"),
        "isEqual": m.op in ("=", "=~"),
    }


def _time(at: datetime | None) -> str:
    at = at or datetime.fromtimestamp(0, UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def silence_view(s: Silence, now: datetime) -> dict[str, Any]:
    """A GettableSilence."""
    return {
        "id": str(s.id),
        "status": {"state": s.state(now)},
        "updatedAt": _time(s.ended_at or s.starts_at),
        "comment": s.comment,
        "createdBy": s.created_by,
        "startsAt": _time(s.starts_at),
        "endsAt": _time(min(s.ends_at, s.ended_at) if s.ended_at else s.ends_at),
        "matchers": [from_matcher(m) for m in s.matchers],
    }


def alert_view(a: AlertState, silenced_by: list[str]) -> dict[str, Any]:
    """A GettableAlert."""
    al = a.alert
    return {
        "labels": al.labels,
        "annotations": al.annotations,
        "startsAt": _time(al.starts_at),
        "endsAt": _time(al.ends_at),
        "updatedAt": _time(al.starts_at),
        "generatorURL": al.generator_url,
        "fingerprint": al.fingerprint,
        "receivers": [{"name": RECEIVER}],
        "status": {
            "state": "suppressed" if silenced_by else "active",
            "silencedBy": silenced_by,
            "inhibitedBy": [],
        },
    }


def _encode(value: Any) -> bytes:
    # As FastAPI's JSONResponse encodes: compact, UTF-8, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def json_array(items: Iterable[Iterable[bytes]]) -> StreamingResponse:
    """A JSON array of items, each given as pieces of its encoding, sent as it is encoded
    (the whole array is never in memory)."""

    def chunks() -> Iterator[bytes]:
        buffer = bytearray(b"[")
        for i, pieces in enumerate(items):
            if i:
                buffer += b","
            for piece in pieces:
                buffer += piece
                if len(buffer) >= 65_536:
                    yield bytes(buffer)
                    buffer.clear()
        buffer += b"]"
        yield bytes(buffer)

    return StreamingResponse(chunks(), media_type="application/json")


def _filters(raw: list[str] | None) -> list[Matcher]:
    out = []
    for text in raw or []:
        try:
            out.append(Matcher.parse(text.strip()))
        except ValueError as e:
            raise AmProblem(400, f"bad matcher format: {text}: {e}") from None
    return out


def silence_matches_filter(s: Silence, filters: list[Matcher]) -> bool:
    """Alertmanager's rule: every filter matches the value of a same-named silence matcher."""
    return all(
        any(m.name == f.name and f.matches({f.name: m.value}) for m in s.matchers)
        for f in filters
    )


# A short closure per route over `ctx`, as the other routers of main have it.
def alertmanager_router(ctx: ApiContext) -> APIRouter:  # noqa: PLR0915
    """The /api/v2 read side and silences, bound to a running daemon."""
    router = APIRouter(tags=["alertmanager"])
    ing = ctx.ingestor

    def who(request: Request, needs: str) -> Identity:
        peer = request.client.host if request.client else None
        return ctx.auth.identify(request.headers.get("authorization"), peer, needs)

    def problem(e: AmProblem) -> JSONResponse:
        return JSONResponse(e.reason, status_code=e.status)

    def alerts(
        filters: list[Matcher], *, active: bool, silenced: bool
    ) -> list[tuple[AlertState, list[str]]]:
        now = ctx.clock()
        live = [s for s in ing.world.silences.values() if s.state(now) == "active"]
        out = []
        for a in ing.world.alerts.values():
            if not a.firing or not matches_all(filters, a.alert.labels):
                continue
            by = [str(s.id) for s in live if matches_all(s.matchers, a.alert.labels)]
            if (by and silenced) or (not by and active):
                out.append((a, by))
        out.sort(key=lambda x: (x[0].alert.starts_at, x[0].alert.fingerprint))
        return out

    @router.get("/api/v2/alerts", response_model=list[GettableAlert])
    async def get_alerts(  # noqa: PLR0917 - Alertmanager's query parameters
        request: Request,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
        filter: Annotated[list[str] | None, Query()] = None,
        receiver: str | None = None,
    ) -> Any:
        who(request, "viewer")
        try:
            found = alerts(_filters(filter), active=active, silenced=silenced)
        except AmProblem as e:
            return problem(e)
        if receiver and receiver != RECEIVER:
            return []
        # Encoded one alert at a time: at the hot set's limit the whole list is ~85 MB of
        # JSON, and building it at once took the daemon past the unit's MemoryMax.
        return json_array((_encode(alert_view(a, by)),) for a, by in found)

    @router.get("/api/v2/alerts/groups", response_model=list[AlertGroup])
    async def get_groups(  # noqa: PLR0917 - Alertmanager's query parameters
        request: Request,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        filter: Annotated[list[str] | None, Query()] = None,
        receiver: str | None = None,
    ) -> Any:
        who(request, "viewer")
        try:
            found = alerts(_filters(filter), active=active, silenced=silenced)
        except AmProblem as e:
            return problem(e)
        if receiver and receiver != RECEIVER:
            return []
        policy = ing.world.policy
        groups: dict[tuple[tuple[str, str], ...], list[tuple[AlertState, list[str]]]] = {}
        for a, by in found:
            inc = ing.world.incidents.get(a.incident_id) if a.incident_id else None
            labels = inc.group_labels if inc else policy.group_labels(a.alert.labels)
            groups.setdefault(tuple(sorted(labels.items())), []).append((a, by))

        def group(key: tuple[tuple[str, str], ...], members: list[Any]) -> Iterator[bytes]:
            head = {"labels": dict(key), "receiver": {"name": RECEIVER}}
            yield _encode(head)[:-1] + b',"alerts":['
            for i, (a, by) in enumerate(members):
                yield (b"," if i else b"") + _encode(alert_view(a, by))
            yield b"]}"

        return json_array(group(key, members) for key, members in sorted(groups.items()))

    @router.get("/api/v2/silences", response_model=list[GettableSilence])
    async def get_silences(
        request: Request,
        filter: Annotated[list[str] | None, Query()] = None,
    ) -> Any:
        who(request, "viewer")
        try:
            filters = _filters(filter)
        except AmProblem as e:
            return problem(e)
        now = ctx.clock()
        order = {"active": 0, "pending": 1, "expired": 2}
        found = [s for s in ing.world.silences.values() if silence_matches_filter(s, filters)]
        found.sort(key=lambda s: (order[s.state(now)], s.ends_at))
        return [silence_view(s, now) for s in found]

    @router.post("/api/v2/silences", response_model=SilenceCreated)
    async def post_silence(request: Request) -> Any:
        ident = who(request, "responder")
        now = ctx.clock()
        try:
            body = PostableSilence.model_validate_json(await request.body())
            matchers = tuple(to_matcher(m) for m in body.matchers)
        except (ValidationError, ValueError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            return problem(AmProblem(400, f"invalid silence: {reason}"))
        if body.endsAt <= body.startsAt:
            return problem(AmProblem(400, "invalid silence: end time must not be before start"))
        if body.endsAt <= now:
            return problem(AmProblem(400, "invalid silence: end time can't be in the past"))
        longest: timedelta = ctx.settings.limits.max_silence
        if body.endsAt - max(body.startsAt, now) > longest:
            return problem(
                AmProblem(400, f"invalid silence: longer than limits.max_silence ({longest})")
            )
        if silences_everything(matchers) and not matches_all(matchers, {}) and not ident.can(
            "admin"
        ):
            return problem(AmProblem(403, "this silence would match every alert; ask an admin"))
        if body.id is not None:
            old = ing.world.silences.get(body.id)
            if old is None:
                return problem(AmProblem(404, f"silence {body.id} not found"))
            if old.state(now) != "expired":
                await ing.execute(EndSilence(body.id, ident.name))
        sid = uuid4()
        await ing.execute(
            CreateSilence(sid, matchers, body.startsAt, body.endsAt, ident.name, body.comment)
        )
        return {"silenceID": str(sid)}

    @router.get("/api/v2/silence/{silence_id}", response_model=GettableSilence)
    async def get_silence(request: Request, silence_id: str) -> Any:
        who(request, "viewer")
        s = _silence(silence_id)
        if s is None:
            return problem(AmProblem(404, f"silence {silence_id} not found"))
        return silence_view(s, ctx.clock())

    @router.delete("/api/v2/silence/{silence_id}")
    async def delete_silence(request: Request, silence_id: str) -> Any:
        ident = who(request, "responder")
        s = _silence(silence_id)
        if s is None:
            return problem(AmProblem(404, f"silence {silence_id} not found"))
        # Expiring an expired silence leaves it as asked: no event, 200 (amtool 0.25 knows
        # only 200 and 500 here, and a 500 would blame the daemon for a repeat).
        if s.state(ctx.clock()) != "expired":
            await ing.execute(EndSilence(s.id, ident.name))
        return JSONResponse(None, status_code=200)

    def _silence(text: str) -> Silence | None:
        try:
            return ing.world.silences.get(UUID(text))
        except ValueError:
            return None

    @router.get("/api/v2/status", response_model=AlertmanagerStatus)
    async def get_status(request: Request) -> dict[str, Any]:
        who(request, "viewer")
        return {
            "cluster": {"name": "watchkeeper", "status": "disabled", "peers": []},
            "config": {"original": "# watchkeeper: receivers and routes live in its config\n"},
            "uptime": _time(datetime.fromtimestamp(_STARTED, UTC)),
            "versionInfo": {
                "version": installed_version(),
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "none (watchkeeper, Python)",
            },
        }

    return router
