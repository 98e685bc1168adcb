"""The agent's figures on /metrics: queue by severity, running, tokens, cost, calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

SEVERITIES = ("critical", "error", "warning", "info", "none")


class AgentCollector(Collector):
    """Reads the agent's status at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the metric families."""
        s = self.status()
        q = GaugeMetricFamily(
            "watchkeeper_agent_queue_length",
            "Investigations waiting for a worker, by incident severity",
            labels=["severity"],
        )
        by_sev = s["queue"]["by_severity"]
        for sev in sorted(set(SEVERITIES) | set(by_sev)):
            q.add_metric([sev], by_sev.get(sev, 0))
        yield q
        yield GaugeMetricFamily(
            "watchkeeper_agent_queue_oldest_wait_seconds",
            "How long the longest-waiting queued investigation has waited",
            value=s["queue"]["oldest_wait_seconds"],
        )
        yield GaugeMetricFamily(
            "watchkeeper_agent_running", "Investigations running now", value=s["running"]
        )
        yield GaugeMetricFamily(
            "watchkeeper_agent_concurrency",
            "Most investigations run at once",
            value=s["concurrency"],
        )
        yield GaugeMetricFamily(
            "watchkeeper_agent_tokens",
            "Model tokens used by investigations in the hot set and recent past",
            value=s["tokens"],
        )
        yield GaugeMetricFamily(
            "watchkeeper_agent_cost",
            "Estimated model cost of investigations in the hot set and recent past",
            value=s["cost"],
        )
        for name, key, doc in (
            ("llm_calls", "llm_calls", "Model calls made since start"),
            ("llm_failures", "llm_failures", "Model calls that failed after retries, since start"),
            ("tool_calls", "tool_calls", "Tool calls run since start"),
            ("proposals", "proposals", "Actions proposed since start"),
            ("refusals", "refused", "Tool calls and proposals refused since start"),
        ):
            yield CounterMetricFamily(f"watchkeeper_agent_{name}", doc, value=s[key])
