"""The app in process and its route table, for tests that drive the HTTP surface without a
daemon process (security, body limits, fuzz, the console)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from daemon.config.auth import Authenticator
from daemon.config.settings import Settings
from daemon.domain import GroupingPolicy
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import EventLog
from daemon.web.app import create_app
from daemon.web.context import ApiContext

# A well-formed id for every `{…_id}` path parameter: routes answer it with 404, not 422.
SOME_ID = "5b0c3f7e-0000-4000-8000-000000000001"


def served_routes(app: Any, *, api_only: bool = False) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD aside; `api_only` keeps only
    FastAPI's own routes (not /openapi.json, /docs)."""
    out: set[tuple[str, str]] = set()
    pending = list(app.routes)
    while pending:
        r = pending.pop()
        inner = getattr(r, "original_router", None)  # newer FastAPI keeps routers whole
        if inner is not None:
            pending += inner.routes
        elif not api_only or isinstance(r, APIRoute):
            methods: set[str] = getattr(r, "methods", None) or set()
            out |= {(m, getattr(r, "path", "")) for m in methods if m != "HEAD"}
    return out


def concrete(path: str) -> str:
    """A route template with its parameters filled in."""
    for name in ("incident_id", "action_id", "silence_id", "situation_id"):
        path = path.replace("{" + name + "}", SOME_ID)
    return path.replace("{verb}", "note").replace("{runbook_id}", "disk-filling")


@asynccontextmanager
async def in_process(
    settings: Settings,
    now: datetime,
    health: Callable[[], dict[str, Any]] = lambda: {"healthy": True},
) -> AsyncIterator[tuple[FastAPI, Ingestor]]:
    """The app over a started Ingestor on `settings.store`, its clock stopped at `now`."""
    log = EventLog(settings.store)
    ing = Ingestor(log, GroupingPolicy(), lambda: now)
    await ing.start()
    ctx = ApiContext(settings, ing, lambda: now, Metrics(), Authenticator(settings), health)
    try:
        yield create_app(ctx), ing
    finally:
        await ing.close()
        log.close()
