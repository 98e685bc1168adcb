"""Stream sources as the runtime sees them: their health on /metrics, and the rules command.

The rules the domain evaluates come from two places: `rules:` (metric streams) and each
Prometheus source's PromQL rules. `rules_command` puts them together; the runtime submits
it at start (resuming absence clocks) and again on reload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon.config.sources import RuleConfig, SourcesConfig, domain_rules
from daemon.domain.rule_model import ConfigureRules
from daemon.intake.source import Source


def rules_command(
    rules: list[RuleConfig], sources: SourcesConfig, *, resuming: bool
) -> ConfigureRules:
    """The command that records the configured rules (only differences become events)."""
    return ConfigureRules(domain_rules(rules, sources), resuming=resuming)


class SourceCollector(Collector):
    """Per-source health as Prometheus metrics, read at scrape time."""

    def __init__(self, sources: Callable[[], Sequence[Source]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Connected, messages, errors, lag and last message time per source."""
        labels = ["source", "kind"]
        connected = GaugeMetricFamily(
            "watchkeeper_source_connected", "1 while the source is connected", labels=labels
        )
        messages = CounterMetricFamily(
            "watchkeeper_source_messages", "Messages committed from the source", labels=labels
        )
        errors = CounterMetricFamily(
            "watchkeeper_source_errors",
            "Connection failures and unreadable messages (dead letters)",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "watchkeeper_source_lag", "Messages behind the source (Kafka: records)", labels=labels
        )
        last = GaugeMetricFamily(
            "watchkeeper_source_last_message_timestamp_seconds",
            "When the source last delivered a message (Unix time)",
            labels=labels,
        )
        for src in self.sources():
            h = src.health
            key = [h.name, h.kind]
            connected.add_metric(key, 1.0 if h.connected else 0.0)
            messages.add_metric(key, h.messages)
            errors.add_metric(key, h.errors)
            if h.lag is not None:
                lag.add_metric(key, h.lag)
            if h.last_message_at is not None:
                last.add_metric(key, h.last_message_at)
        yield from (connected, messages, errors, lag, last)
