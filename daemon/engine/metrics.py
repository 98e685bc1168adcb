"""Prometheus metrics for /metrics, on a registry of the daemon's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot()
        g = GaugeMetricFamily(
            "watchkeeper_incidents", "Incidents in the hot set by state", labels=["state"]
        )
        for state in ("open", "acknowledged", "resolved"):
            g.add_metric([state], s["incidents"].get(state, 0))
        yield g
        yield GaugeMetricFamily(
            "watchkeeper_alerts_firing", "Firing alerts", value=s["alerts_firing"]
        )
        yield GaugeMetricFamily(
            "watchkeeper_silences_active", "Active silences", value=s["silences_active"]
        )
        yield GaugeMetricFamily(
            "watchkeeper_log_position", "Newest committed notification id", value=s["position"]
        )
        ev = GaugeMetricFamily(
            "watchkeeper_events_recorded",
            "Events folded since the log began, by type",
            labels=["type"],
        )
        yield GaugeMetricFamily(
            "watchkeeper_store_up",
            "1 while the event store commits, 0 while it is unavailable (intake answers 503)",
            value=1.0 if s.get("store_up", True) else 0.0,
        )
        yield GaugeMetricFamily(
            "watchkeeper_store_seconds_since_last_commit",
            "Seconds since the last successful commit to the event store (or start-up)",
            value=s.get("store_seconds_since_commit", 0.0),
        )
        for kind, n in sorted(s["event_counts"].items()):
            ev.add_metric([kind], n)
        yield ev
        # From the notification log, so the counts survive restarts.
        nf = GaugeMetricFamily(
            "watchkeeper_notifications",
            "Notifications recorded since the log began, by channel and outcome",
            labels=["channel", "outcome"],
        )
        for channel, c in sorted(s.get("notifications", {}).items()):
            for outcome in ("sent", "failed", "held"):
                nf.add_metric([channel, outcome], c[outcome])
        yield nf


class Metrics:
    """Counters and histograms the daemon updates, plus gauges read from state at scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.alerts_received = Counter(
            "watchkeeper_alerts_received", "Alerts accepted by intake", ["source"], registry=r
        )
        self.alerts_rejected = Counter(
            "watchkeeper_alerts_rejected",
            "Payloads refused by intake",
            ["source", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "watchkeeper_dead_letters", "Dead-letter records written", ["source"], registry=r
        )
        self.store_write = Histogram(
            "watchkeeper_store_write_seconds",
            "Time to commit one batch to the event store",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def watch_state(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Register gauges computed from state when scraped."""
        self.registry.register(_StateCollector(snapshot))
