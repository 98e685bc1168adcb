"""Prometheus histograms of outcomes, observed as events are committed: time to acknowledge,
resolve and approve, and what actions came to. They count since the daemon started; the
log-wide figures are `watchkeeper stats` / `GET /api/v1/stats` (daemon/domain/outcomes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Histogram

from daemon.domain.events import DomainEvent
from daemon.domain.state import World

# From half a minute to a day: on-call answers in minutes, fixes in minutes to hours.
BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
ASKED_KEPT = 10_000
_OUTCOMES = {
    "ActionApproved": "approved",
    "ActionRejected": "rejected",
    "ApprovalExpired": "expired",
    "ActionCancelled": "cancelled",
    "ActionSucceeded": "succeeded",
    "ActionFailed": "failed",
    "ActionOutcomeUnknown": "unknown",
    "VerificationPassed": "verified",
    "VerificationFailed": "verification_failed",
    "RolledBack": "rolled_back",
}
_WATCHED = frozenset({"IncidentAcknowledged", "IncidentResolved", "ApprovalRequested", *_OUTCOMES})


class OutcomeHistograms:
    """An ingestor listener that observes outcome times on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry, world: Callable[[], World]) -> None:
        self.world = world
        self.asked: dict[UUID, datetime] = {}
        self.ack = Histogram(
            "watchkeeper_time_to_acknowledge_seconds",
            "From an incident opening to its first acknowledgement",
            ["severity"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.resolve = Histogram(
            "watchkeeper_time_to_resolve_seconds",
            "From an incident opening to its resolution",
            ["severity"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.approve = Histogram(
            "watchkeeper_time_to_approve_seconds",
            "From an approval request to the first approval or rejection",
            buckets=BUCKETS,
            registry=registry,
        )
        self.actions = Counter(
            "watchkeeper_action_outcomes",
            "What proposed actions came to",
            ["outcome"],
            registry=registry,
        )

    def __call__(self, position: int, event: DomainEvent) -> None:
        """Observe one committed event (most kinds are not looked at)."""
        name = type(event).__name__
        if name not in _WATCHED:
            return
        e: Any = event
        if name in ("IncidentAcknowledged", "IncidentResolved"):
            inc = self.world().incidents.get(e.originator_id)
            if inc is None:
                return
            seconds = max((e.timestamp - inc.opened_at).total_seconds(), 0.0)
            hist = self.ack if name == "IncidentAcknowledged" else self.resolve
            hist.labels(inc.severity).observe(seconds)
            return
        if name == "ApprovalRequested":
            if len(self.asked) >= ASKED_KEPT:
                self.asked.pop(next(iter(self.asked)))
            self.asked[e.originator_id] = e.timestamp
            return
        asked = self.asked.pop(e.originator_id, None)
        if asked is not None and name in ("ActionApproved", "ActionRejected"):
            self.approve.observe(max((e.timestamp - asked).total_seconds(), 0.0))
        self.actions.labels(_OUTCOMES[name]).inc()
