"""Whether the event store commits now: the truth `/readyz`, `/healthz` and `/metrics` tell.

The Ingestor marks the store down when a commit (or a probe) fails and up again once a
recovery probe got through; it stamps every successful commit. Time is read from an
injected monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class StoreUnavailable(Exception):  # noqa: N818 - reads as a condition
    """The event store did not commit; nothing was accepted."""


@dataclass
class StoreHealth:
    """The store's state as the writer last saw it."""

    clock: Callable[[], float] = time.monotonic
    # Monotonic time of the last successful commit (start-up counts: the log was just read).
    last_commit_at: float = field(default=0.0)
    down_since: float | None = None
    reason: str = ""
    outages: int = 0

    def __post_init__(self) -> None:
        self.last_commit_at = self.clock()

    @property
    def up(self) -> bool:
        """Whether the last commit or probe got through."""
        return self.down_since is None

    def committed(self) -> None:
        """A commit got through."""
        self.last_commit_at = self.clock()

    def failed(self, reason: str) -> bool:
        """A commit or probe failed; True when this starts an outage."""
        self.reason = reason
        if self.down_since is not None:
            return False
        self.down_since = self.clock()
        self.outages += 1
        return True

    def recovered(self) -> float:
        """The store answers again; returns how long it was down (seconds)."""
        since = self.down_since
        self.down_since = None
        self.reason = ""
        return 0.0 if since is None else self.clock() - since

    def seconds_since_commit(self) -> float:
        """Seconds since the last successful commit (or start-up)."""
        return max(0.0, self.clock() - self.last_commit_at)

    def down_for(self) -> float:
        """Seconds the current outage has lasted (0 when up)."""
        return 0.0 if self.down_since is None else max(0.0, self.clock() - self.down_since)

    def problem(self) -> str:
        """Why the store is not usable, for 503 bodies and logs ("" when up)."""
        if self.up:
            return ""
        return f"event store unavailable for {self.down_for():.0f}s: {self.reason}"

    def view(self) -> dict[str, Any]:
        """What /healthz and `watchkeeper status` show."""
        return {
            "ok": self.up,
            "problem": self.problem() or None,
            "seconds_since_commit": round(self.seconds_since_commit(), 1),
            "outages": self.outages,
        }
