"""PromQL instant and range queries via prometheus-api-client, off the event loop."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from daemon.domain.durations import parse_duration
from daemon.domain.investigation_model import Fact
from daemon.runbooks.tools import (
    PromQLInstantArgs,
    PromQLRangeArgs,
    ToolContext,
    ToolResult,
    error,
)

MAX_SERIES = 50
MAX_RANGE = timedelta(days=7)


def _labels(metric: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return (
        (metric.get("__name__", "") + "{" + inner + "}") if inner else metric.get("__name__", "{}")
    )


def _num(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _clean(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def trend(values: list[float]) -> str:
    """rising, falling or flat: least-squares slope over the window against the value spread."""
    pts = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
    if len(pts) < 2:
        return "flat"
    n = len(pts)
    mx = sum(i for i, _ in pts) / n
    my = sum(v for _, v in pts) / n
    var = sum((i - mx) ** 2 for i, _ in pts)
    slope = sum((i - mx) * (v - my) for i, v in pts) / var if var else 0.0
    change = slope * (pts[-1][0] - pts[0][0])
    scale = max(abs(my), max(v for _, v in pts) - min(v for _, v in pts), 1e-9)
    if abs(change) < 0.05 * scale:
        return "flat"
    return "rising" if change > 0 else "falling"


class Prometheus:
    """A Prometheus server's HTTP API (blocking client, used from a worker thread)."""

    def __init__(self, url: str, timeout: float, workers: int = 4) -> None:
        self.url = url
        self.timeout = timeout
        # Its own bounded pool: a slow Prometheus blocks these threads, never the default
        # executor the API and the event log use (8 stuck queries made incident reads
        # wait 6.4 s; bench/slow_prometheus.py).
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql")
        self.client = PrometheusConnect(
            url=url,
            disable_ssl=False,
            retry=Retry(total=1, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            timeout=math.ceil(timeout),
        )

    async def instant(self, query: str, at: datetime) -> Any:
        """Raw result of an instant query at `at`."""
        params = {"time": f"{at.timestamp():.3f}", "timeout": f"{math.ceil(self.timeout)}s"}
        return await asyncio.wait_for(
            self._blocking(self.client.custom_query, query, params), self.timeout + 2
        )

    async def range(self, query: str, start: datetime, end: datetime, step: str) -> Any:
        """Raw result of a range query."""
        return await asyncio.wait_for(
            self._blocking(
                self.client.custom_query_range,
                query,
                start,
                end,
                step,
                {"timeout": f"{math.ceil(self.timeout)}s"},
            ),
            self.timeout + 2,
        )

    def _blocking(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def _failure(now: datetime, query: str, e: Exception) -> ToolResult:
    if isinstance(e, TimeoutError):
        return error(now, f"query timed out: {query}")
    if isinstance(e, PrometheusApiClientException):
        return error(now, f"Prometheus refused the query: {str(e)[:500]} (query: {query})")
    return error(now, f"cannot reach Prometheus: {type(e).__name__}: {str(e)[:300]}")


class PromQLInstant:
    """`promql_instant`: one value per series now; facts value/min/max/sum/count."""

    name = "promql_instant"
    args = PromQLInstantArgs

    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom

    async def run(self, args: PromQLInstantArgs, ctx: ToolContext) -> ToolResult:
        """Evaluate the query at the context's time."""
        try:
            raw = await self.prom.instant(args.query, ctx.now)
        except Exception as e:  # every failure is a result the model should see
            return _failure(ctx.now, args.query, e)
        return summarize_instant(args.query, raw, ctx.now)


def summarize_instant(query: str, raw: Any, now: datetime) -> ToolResult:
    """Turn an instant-query result (vector or scalar) into a ToolResult."""
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
        v = _num(raw[1])
        return ToolResult(
            status="ok",
            observed_at=now,
            summary=f"scalar {v:.6g}",
            facts={"value": _clean(v), "min": _clean(v), "max": _clean(v), "count": 1},
            data={"scalar": _clean(v)},
        )
    series = [(s.get("metric", {}), _num(s.get("value", [0, "NaN"])[1])) for s in raw or []]
    if not series:
        return ToolResult(
            status="no_data",
            observed_at=now,
            summary=f"no series: the query returned nothing ({query[:200]})",
            facts={"count": 0},
        )
    series.sort(key=lambda s: -s[1] if not math.isnan(s[1]) else math.inf)
    values = [v for _, v in series if not math.isnan(v)]
    facts: dict[str, Fact] = {"count": len(series)}
    if values:
        facts |= {
            "value": values[0] if len(series) == 1 else max(values),
            "min": min(values),
            "max": max(values),
            "sum": sum(values),
        }
    shown = ", ".join(f"{_labels(m)} = {v:.6g}" for m, v in series[:5])
    more = f" (+{len(series) - 5} more)" if len(series) > 5 else ""
    return ToolResult(
        status="ok",
        observed_at=now,
        summary=f"{len(series)} series: {shown}{more}",
        facts=facts,
        data=[{"metric": m, "value": _clean(v)} for m, v in series[:MAX_SERIES]],
    )


class PromQLRange:
    """`promql_range`: per-series min/max/last/trend over a window, never raw points."""

    name = "promql_range"
    args = PromQLRangeArgs

    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom

    async def run(self, args: PromQLRangeArgs, ctx: ToolContext) -> ToolResult:
        """Evaluate over [now - range, now] and summarize."""
        try:
            window = min(parse_duration(args.range), MAX_RANGE)
            step = parse_duration(args.step) if args.step else window / 120
        except ValueError as e:
            return error(ctx.now, f"bad range or step: {e}")
        if window.total_seconds() <= 0:
            return error(ctx.now, "range must be positive")
        step_s = max(1, int(step.total_seconds()))
        # Start a whole number of steps back, so the last evaluation is exactly now.
        points = max(1, math.ceil(window.total_seconds() / step_s))
        start = ctx.now - timedelta(seconds=points * step_s)
        try:
            raw = await self.prom.range(args.query, start, ctx.now, f"{step_s}s")
        except Exception as e:  # every failure is a result the model should see
            return _failure(ctx.now, args.query, e)
        return summarize_range(args.query, raw, ctx.now, args.range)


def summarize_range(query: str, raw: Any, now: datetime, window: str) -> ToolResult:
    """Summarize a matrix per series: first, last, min, max, mean, trend."""
    rows = []
    for s in raw or []:
        vals = [_num(v[1]) for v in s.get("values", [])]
        good = [v for v in vals if not math.isnan(v)]
        if not good:
            continue
        rows.append(
            {
                "metric": s.get("metric", {}),
                "first": good[0],
                "last": good[-1],
                "min": min(good),
                "max": max(good),
                "mean": sum(good) / len(good),
                "trend": trend(vals),
                "points": len(good),
            }
        )
    if not rows:
        return ToolResult(
            status="no_data",
            observed_at=now,
            summary=f"no series over the last {window} ({query[:200]})",
            facts={"count": 0},
        )
    rows.sort(key=lambda r: -float(r["last"]))
    first = rows[0]
    facts: dict[str, Fact] = {
        "count": len(rows),
        "min": min(float(r["min"]) for r in rows),
        "max": max(float(r["max"]) for r in rows),
        "last": float(first["last"]),
        "first": float(first["first"]),
        "mean": float(first["mean"]),
        "trend": str(first["trend"]) if len({r["trend"] for r in rows}) == 1 else "mixed",
    }
    shown = "; ".join(
        f"{_labels(r['metric'])}: last {r['last']:.6g}, min {r['min']:.6g}, max {r['max']:.6g}, "
        f"{r['trend']}"
        for r in rows[:5]
    )
    more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
    return ToolResult(
        status="ok",
        observed_at=now,
        summary=f"{len(rows)} series over {window}: {shown}{more}",
        facts=facts,
        data=rows[:MAX_SERIES],
    )
