"""The Source protocol: every adapter that brings alerts or samples in (handlers/sources/*)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Protocol, Self

from pydantic import BaseModel


class SourceHealth(BaseModel):
    """What /healthz, /metrics and `watchkeeper status` show per source."""

    name: str
    kind: str
    connected: bool = False
    last_message_at: float | None = None
    messages: int = 0
    errors: int = 0
    lag: int | None = None
    last_error: str = ""

    def seen(self, n: int = 1) -> None:
        """Count messages and note the time."""
        self.messages += n
        self.last_message_at = time.time()

    def failed(self, error: str) -> None:
        """Count an error and keep its text."""
        self.errors += 1
        self.last_error = error[:300]


class Source(Protocol):
    """An async context manager that starts named tasks on enter and stops them on exit.

    It feeds the Ingestor, reconnects on its own with jittered backoff, never raises out
    of its tasks because a broker is down, and reports health.
    """

    name: str
    health: SourceHealth

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...
