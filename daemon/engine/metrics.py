"""Prometheus metrics for /metrics, on a registry of the daemon's own."""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon import installed_version

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_Asgi = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
            "watchkeeper_store_writer_last_ok_age_seconds",
            "Seconds since the store's writer thread last answered (stalled when it grows)",
            value=s.get("writer_age", 0.0),
        )
        yield GaugeMetricFamily(
            "watchkeeper_log_position", "Newest committed notification id", value=s["position"]
        )
        ev = CounterMetricFamily(
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
        nf = CounterMetricFamily(
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
        self.http_duration = Histogram(
            "watchkeeper_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code",
            ["method", "route", "code"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        # process_* (CPU, memory, open files) and python_info, as every exporter has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        build = Gauge(
            "watchkeeper_build_info",
            "Always 1; the running version in its labels",
            ["version", "python"],
            registry=r,
        )
        build.labels(installed_version(), platform.python_version()).set(1)

    def instrument(self, app: _Asgi) -> _Asgi:
        """The ASGI app, timing each HTTP request by method, route template and status code."""
        histogram = self.http_duration

        async def timed(scope: _Scope, receive: _Receive, send: _Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            code = [500]

            async def send_seen(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    code[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_seen)
            finally:
                # The route's template, never the raw path: ids would make a series each.
                route = getattr(scope.get("route"), "path", None) or "(unmatched)"
                histogram.labels(scope["method"], route, str(code[0])).observe(
                    time.perf_counter() - started
                )

        return timed

    def watch_state(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Register gauges computed from state when scraped."""
        self.registry.register(_StateCollector(snapshot))
