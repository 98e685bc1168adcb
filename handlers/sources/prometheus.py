"""Prometheus source (prometheus-api-client): PromQL alerting rules, and Prometheus' own alerts.

Every `interval`, each rule's `expr` is evaluated as an instant query; the series in the
result go to the domain as one `ObserveQueryResult` per rule, where `for:` is applied and
each series fires (and later resolves) its own alert. Series that leave the result resolve.
With `import_alerts`, the firing alerts of `GET /api/v1/alerts` are imported with a lease,
and the ones that disappear are resolved. The client is synchronous: every call runs in a
thread with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util import Retry

from daemon.config.sources import PrometheusConfig
from daemon.domain.commands import Command, ReceiveAlert, Rejected
from daemon.domain.limits import DEFAULT_LIMITS, AlertLimits
from daemon.domain.rule_model import ObserveQueryResult, QuerySeries
from daemon.intake.formats import PayloadError, parse_single_alert
from daemon.intake.source import SourceHealth
from daemon.intake.streams import (
    Backoff,
    Intake,
    SourceTasks,
    StoreUnavailable,
    describe,
)

log = logging.getLogger("watchkeeper.sources.prometheus")
T = TypeVar("T")
# What a down, slow or misbehaving Prometheus raises: the source degrades and retries.
_FAILURES = (
    requests.RequestException, PrometheusApiClientException, TimeoutError, ValueError, KeyError
)
# How the two clients name a refusal: prometheus-api-client's "HTTP Status Code 401 (...)",
# requests' "401 Client Error: ...".
_REFUSED = re.compile(r"\b(401|403)\b")


def _explain(e: BaseException) -> str:
    """The failure for health, with what to check when Prometheus refused the credentials."""
    text = describe(e)
    if isinstance(e, requests.RequestException | PrometheusApiClientException) and (
        _REFUSED.search(str(e))
    ):
        text += " (Prometheus refused the request: check the Authorization header in headers:)"
    return text


def query_series(result: list[dict[str, Any]]) -> tuple[QuerySeries, ...]:
    """An instant-query vector as the domain's series (values that do not parse become None)."""
    out = []
    for item in result:
        raw = item.get("value", [None, None])[1]
        try:
            value: float | None = float(raw)
        except (TypeError, ValueError):
            value = None
        out.append(QuerySeries(dict(item.get("metric", {})), value))
    return tuple(out)


class PrometheusSource(SourceTasks):
    """Evaluates PromQL rules against one Prometheus and imports its alerts if asked."""

    def __init__(
        self,
        config: PrometheusConfig,
        intake: Intake,
        clock: Callable[[], datetime],
        *,
        headers: dict[str, str],
        resolve_timeout: timedelta,
        backoff: Backoff,
        limits: AlertLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__()
        self.limits = limits
        self.config = config
        self.name = config.name
        self.intake = intake
        self.clock = clock
        self.headers = headers
        self.backoff = backoff
        self.health = SourceHealth(name=config.name, kind="prometheus")
        self.rules = [(r.name or r.alert, r.expr) for r in config.rules]
        self.source = f"prometheus:{config.name}"
        # An imported alert is renewed each poll; the lease covers a few missed polls.
        self.lease = max(resolve_timeout, 3 * config.interval)
        self.timeout = config.timeout.total_seconds()
        self.evaluations = 0
        # Fingerprints of imported alerts we last saw firing (None: not polled yet).
        self._imported: set[str] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prom-{config.name}")
        self.session = requests.Session()
        self.session.verify = not config.insecure_skip_verify
        self.client = PrometheusConnect(
            url=config.url,
            headers=headers,
            # No retries inside the client: our loop retries with backoff, off the event loop.
            retry=Retry(total=0),
            session=self.session,
            timeout=self.timeout,
        )

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """One evaluation loop."""
        return {"evaluate": self._run}

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # The thread cannot be cancelled; requests' own timeout ends it. One thread of its
        # own: a slow Prometheus never occupies the default executor the API uses.
        pending = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        return await asyncio.wait_for(pending, self.timeout + 1)

    async def _run(self) -> None:
        interval = self.config.interval.total_seconds()
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.evaluate()
                except _FAILURES as e:
                    reason = _explain(e)
                    if self.health.connected or not self.health.errors:
                        log.warning("prometheus source=%s unavailable: %s", self.name, reason)
                    self.health.connected = False
                    self.health.failed(reason)
                    await asyncio.sleep(min(self.backoff.next(), interval))
                    continue
                except StoreUnavailable as e:
                    self.health.failed(str(e))
                except Exception as e:
                    # An answer we did not expect (or a bug): log it and try again next time.
                    log.exception("prometheus source=%s evaluation failed", self.name)
                    self.health.failed(describe(e))
                else:
                    self.health.connected = True
                    self.backoff.reset()
                await asyncio.sleep(max(interval - (time.monotonic() - started), 0.0))
        finally:
            self.session.close()

    async def evaluate(self) -> None:
        """Query every rule (and the alerts API), then record what changed in one batch."""
        commands: list[Command] = []
        series = 0
        for name, expr in self.rules:
            result = await self._call(self.client.custom_query, expr)
            found = query_series(result)
            series += len(found)
            commands.append(ObserveQueryResult(name, found))
        if self.config.import_alerts:
            commands += await self._import_alerts()
        if commands:
            try:
                await self.intake.submit(commands)
            except Rejected as e:
                # Only when a single command is refused, e.g. a rule not configured (yet).
                self.health.failed(e.reason)
        self.evaluations += 1
        self.health.seen(series)

    def _fetch_alerts(self) -> list[dict[str, Any]]:
        r = self.session.get(
            f"{self.config.url}/api/v1/alerts", headers=self.headers, timeout=self.timeout
        )
        r.raise_for_status()
        alerts: list[dict[str, Any]] = r.json()["data"]["alerts"]
        return alerts

    async def _import_alerts(self) -> list[Command]:
        raw = await self._call(self._fetch_alerts)
        now = self.clock()
        commands: list[Command] = []
        firing: set[str] = set()
        for a in raw:
            if a.get("state") != "firing":
                continue
            obj = {
                "labels": a.get("labels", {}),
                "annotations": a.get("annotations", {}),
                "startsAt": a.get("activeAt"),
                "endsAt": (now + self.lease).isoformat(),
                "generatorURL": f"{self.config.url}/alerts",
            }
            try:
                alert = parse_single_alert(
                    obj, now=now, resolve_timeout=self.lease, source=self.source, limits=self.limits
                )
            except PayloadError as e:
                self.health.failed("imported alert: " + "; ".join(e.problems))
                continue
            with contextlib.suppress(ValueError):
                alert = alert.model_copy(update={"value": float(a.get("value", ""))})
            firing.add(alert.fingerprint)
            commands.append(ReceiveAlert(alert))
        world = self.intake.world
        if self._imported is None:
            # After a start: what we imported before is whatever of ours the world has firing.
            ours = self.source
            self._imported = {
                fp for fp, st in world.alerts.items() if st.firing and st.alert.source == ours
            }
        for fp in self._imported - firing:
            st = world.alerts.get(fp)
            if st is not None and st.firing:
                gone = st.alert.model_copy(update={"status": "resolved", "ends_at": now})
                commands.append(ReceiveAlert(gone))
        self._imported = firing
        return commands
