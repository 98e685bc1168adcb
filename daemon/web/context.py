"""What every router of the HTTP API needs from the running daemon (below the routers, so
the app and its routers import it without importing each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from daemon.config.auth import Authenticator, Identity
from daemon.config.settings import Settings
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics


@dataclass
class ApiContext:
    """What the API needs from the running daemon."""

    settings: Settings
    ingestor: Ingestor
    clock: Callable[[], datetime]
    metrics: Metrics
    auth: Authenticator
    health: Callable[[], dict[str, Any]]
    # Replicas: where to forward writes (None while this process leads; "" while no replica
    # leads). See daemon/web/forward.py.
    leader_url: Callable[[], str | None] = lambda: None

    def identify(self, request: Request, needs: str) -> Identity:
        """Who asks (bearer token, or a loopback peer); AuthError unless their role is `needs`."""
        peer = request.client.host if request.client else None
        return self.auth.identify(request.headers.get("authorization"), peer, needs)


def api_context(request: Request) -> ApiContext:
    """The running daemon, as `create_app` put it on the app (`app.state.ctx`)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


# A route's parameter `ctx: Ctx` receives the running daemon.
Ctx = Annotated[ApiContext, Depends(api_context)]
