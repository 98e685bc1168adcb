"""What every router of the HTTP API needs from the running daemon (below the routers, so
the app and its routers import it without importing each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.config.auth import Authenticator
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
