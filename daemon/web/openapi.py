"""The API's OpenAPI document: the bearer scheme declared, and Swagger UI only when asked.

Swagger UI loads its JavaScript from a CDN, so on an offline ops host it is a blank page:
it is off unless `http.api_docs: true`. `/openapi.json` is always served, for clients and
code generators.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API token from `auth.tokens` (roles viewer < responder < approver < "
    "admin). Loopback clients need none while no tokens are configured.",
}


def declare_bearer(app: FastAPI) -> None:
    """Serve an OpenAPI document that declares the bearer scheme for every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, routes=app.routes,
                description="watchkeeper's HTTP API; Alertmanager API v2 under /api/v2.",
            )
            doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = BEARER
            doc["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def docs_url(enabled: bool) -> str | None:
    """Where Swagger UI is served, if it is."""
    return "/api/docs" if enabled else None
