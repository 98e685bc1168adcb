"""The app's route table, for tests that must cover every route (security, body limits, fuzz)."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

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
