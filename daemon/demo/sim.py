"""A small simulated estate: hosts whose metrics evolve, a disk that fills, a service that dies.

It answers the slice of Prometheus' HTTP API the agent's PromQL tools use (instant and range
queries of plain series selectors) and posts its alerts to watchkeeper the way Prometheus
does (API v2, with a lease renewed on every evaluation). Remediation endpoints stand in for
the hosts' own tooling, so approved actions visibly change the simulated world.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from daemon.domain.matchers import Matcher, matches_all

_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


class UnsupportedQuery(ValueError):  # noqa: N818 - reads as the answer it gives
    """The simulation only evaluates plain series selectors."""


def parse_selector(query: str) -> tuple[str, list[Matcher]]:
    """Parse `name{label="v", other=~"re"}` into a metric name and matchers."""
    m = _SELECTOR.match(query)
    if not m:
        raise UnsupportedQuery(
            f"the demo simulation evaluates plain selectors such as "
            f'demo_disk_used_ratio{{instance="web2"}}, not {query!r}'
        )
    name, inner = m.group(1), m.group(2) or ""
    matchers, pos = [], 0
    while pos < len(inner.strip()):
        mm = _MATCHER.match(inner, pos)
        if not mm:
            raise UnsupportedQuery(f"cannot read the label matchers in {query!r}")
        matchers.append(Matcher(name=mm.group(1), op=mm.group(2), value=mm.group(3)))  # type: ignore[arg-type]
        pos = mm.end()
    return name, matchers


@dataclass
class Series:
    """One simulated time series with a bounded history."""

    name: str
    labels: dict[str, str]
    value: float = 0.0
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=900))


@dataclass
class Alerting:
    """One alert condition, evaluated like a Prometheus alerting rule with `for:`."""

    name: str
    severity: str
    summary: str
    condition: Callable[[], bool]
    labels: dict[str, str]
    for_seconds: float = 5.0
    pending_since: float | None = None
    firing_since: float | None = None


class Estate:
    """Three hosts; web2's /var fills up; the checkout service on web1 dies."""

    def __init__(self, *, fill_after: float = 8.0, kill_after: float = 45.0, seed: int = 3) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - simulation noise, not security
        self.started = time.time()
        self.fill_after = fill_after
        self.kill_after = kill_after
        self.filling = False
        self.killed = False
        self.series: dict[tuple[str, str, str], Series] = {}
        for host in ("web1", "web2", "db1"):
            self._put("demo_cpu_usage_ratio", {"instance": host}, 0.2 + 0.1 * self.rng.random())
            self._put("demo_disk_used_ratio", {"instance": host, "mountpoint": "/var"}, 0.55)
        self._put("demo_service_up", {"instance": "web1", "service": "checkout"}, 1.0)
        self.actions: list[str] = []
        self.alerting = [
            Alerting(
                "DemoDiskFilling",
                "warning",
                "/var on web2 is {value:.0%} full",
                lambda: self.get("demo_disk_used_ratio", "web2") > 0.85,
                {"instance": "web2", "mountpoint": "/var"},
            ),
            Alerting(
                "DemoServiceDown",
                "critical",
                "checkout on web1 is not answering",
                lambda: self.get("demo_service_up", "web1") < 1,
                {"instance": "web1", "service": "checkout"},
            ),
        ]

    def _put(self, name: str, labels: dict[str, str], value: float) -> None:
        key = (name, labels["instance"], labels.get("mountpoint", labels.get("service", "")))
        s = self.series.setdefault(key, Series(name, labels))
        s.value = value

    def get(self, name: str, instance: str) -> float:
        """The current value of a host's series."""
        for (n, inst, _), s in self.series.items():
            if n == name and inst == instance:
                return s.value
        return math.nan

    def step(self, now: float) -> None:
        """Advance the world to `now` (called about once a second)."""
        elapsed = now - self.started
        for (name, host, _), s in self.series.items():
            if name == "demo_cpu_usage_ratio":
                s.value = min(0.95, max(0.05, s.value + self.rng.uniform(-0.05, 0.05)))
            elif name == "demo_disk_used_ratio" and host == "web2":
                if elapsed >= self.fill_after and not self.filling and s.value < 0.6:
                    self.filling = True
                if self.filling:
                    # A runaway log: about 1.5 points a second until someone cleans up.
                    s.value = min(0.99, s.value + 0.015)
            elif name == "demo_service_up" and elapsed >= self.kill_after and not self.killed:
                self.killed = True
                s.value = 0.0
            s.history.append((now, s.value))

    def clean_tmp(self, host: str) -> str:
        """Remediation: rotate and delete old logs on a host's /var."""
        key = ("demo_disk_used_ratio", host, "/var")
        if key not in self.series:
            raise KeyError(f"no host {host!r} in the demo estate")
        self.series[key].value = 0.52
        self.filling = False
        self.actions.append(f"clean_tmp {host}")
        return f"rotated logs on {host}:/var, now {self.series[key].value:.0%} used"

    def restart(self, host: str, service: str) -> str:
        """Remediation: restart a service on a host."""
        key = ("demo_service_up", host, service)
        if key not in self.series:
            raise KeyError(f"no service {service!r} on {host!r} in the demo estate")
        self.series[key].value = 1.0
        self.actions.append(f"restart {host} {service}")
        return f"restarted {service} on {host}"

    def select(self, query: str) -> list[Series]:
        """Series matching a selector."""
        name, matchers = parse_selector(query)
        return [
            s
            for (n, _, _), s in self.series.items()
            if n == name and matches_all(matchers, s.labels)
        ]

    def evaluate_alerts(self, now: float) -> list[dict[str, Any]]:
        """Postable alerts (API v2) for every rule that fires or just stopped firing."""
        out = []
        for rule in self.alerting:
            labels = {
                "alertname": rule.name,
                "severity": rule.severity,
                "job": "demo",
                **rule.labels,
            }
            if rule.condition():
                rule.pending_since = rule.pending_since or now
                if now - rule.pending_since >= rule.for_seconds:
                    rule.firing_since = rule.firing_since or now
                    value = self.get("demo_disk_used_ratio", rule.labels["instance"])
                    out.append(
                        {
                            "labels": labels,
                            "annotations": {"summary": rule.summary.format(value=value)},
                            "startsAt": _iso(rule.firing_since),
                            "endsAt": _iso(now + 15),
                            "generatorURL": "http://127.0.0.1/demo",
                        }
                    )
            else:
                if rule.firing_since is not None:
                    out.append(
                        {"labels": labels, "startsAt": _iso(rule.firing_since), "endsAt": _iso(now)}
                    )
                rule.pending_since = rule.firing_since = None
        return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _metric(s: Series) -> dict[str, str]:
    return {"__name__": s.name, **s.labels}


def _vector(series: list[Series], at: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in series:
        value = s.value
        for ts, v in reversed(s.history):
            if ts <= at:
                value = v
                break
        out.append({"metric": _metric(s), "value": [at, repr(value)]})
    return out


class HostRequest(BaseModel):
    """Which host an action is for."""

    host: str
    service: str = ""


def create_sim_app(estate: Estate) -> FastAPI:
    """The simulation's HTTP face: a Prometheus query API slice and remediation endpoints."""
    app = FastAPI(title="watchkeeper demo estate", docs_url=None, redoc_url=None)

    def bad(e: Exception) -> JSONResponse:
        return JSONResponse({"status": "error", "errorType": "bad_data", "error": str(e)}, 400)

    @app.api_route("/api/v1/query", methods=["GET", "POST"])
    async def query(query: str, time_: float | None = Query(None, alias="time")) -> Any:
        try:
            series = estate.select(query)
        except UnsupportedQuery as e:
            return bad(e)
        at = time_ if time_ is not None else time.time()
        return {
            "status": "success",
            "data": {"resultType": "vector", "result": _vector(series, at)},
        }

    @app.api_route("/api/v1/query_range", methods=["GET", "POST"])
    async def query_range(query: str, start: float, end: float, step: str = "15s") -> Any:
        try:
            series = estate.select(query)
        except UnsupportedQuery as e:
            return bad(e)
        result = [
            {
                "metric": _metric(s),
                "values": [[ts, repr(v)] for ts, v in s.history if start <= ts <= end],
            }
            for s in series
        ]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    @app.post("/actions/clean-tmp")
    async def clean_tmp(req: HostRequest) -> Any:
        try:
            return {"status": "ok", "message": estate.clean_tmp(req.host)}
        except KeyError as e:
            return JSONResponse({"status": "error", "error": str(e)}, 404)

    @app.post("/actions/restart")
    async def restart(req: HostRequest) -> Any:
        try:
            return {"status": "ok", "message": estate.restart(req.host, req.service)}
        except KeyError as e:
            return JSONResponse({"status": "error", "error": str(e)}, 404)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        lines = []
        for s in estate.series.values():
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            lines.append(f"{s.name}{{{labels}}} {s.value}")
        return PlainTextResponse("\n".join(lines) + "\n")

    return app
