"""An exporter serving the metrics the shipped runbooks query, shaped like node_exporter,
blackbox_exporter, kafka-exporter and an MQTT exporter, with values that describe a world
where every runbook's default condition holds. Counters grow at a set rate per second.

Prometheus scrapes it with `honor_labels: true`, so the `instance` labels below are kept.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
HOST = "web1:9100"
Value = float | Callable[[float], float]


class MetricZoo:
    """Gauges (fixed or computed from the time) and counters (a rate per second)."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.samples: list[tuple[str, dict[str, str], str, Value]] = []
        zoo = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = zoo.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="zoo", daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        """host:port to scrape."""
        return f"{LOOPBACK}:{self.server.server_address[1]}"

    def gauge(self, metric: str, value: Value, /, **labels: str) -> None:
        """A gauge: a number, or a function of the current Unix time."""
        self.samples.append((metric, labels, "gauge", value))

    def counter(self, metric: str, rate: float, /, start: float = 1000.0, **labels: str) -> None:
        """A counter growing by `rate` per second."""
        self.samples.append((metric, labels, "counter", lambda now: start + rate * (now - self.t0)))

    def render(self) -> str:
        """The exposition text."""
        now = time.time()
        lines = []
        typed: set[str] = set()
        for name, labels, kind, value in self.samples:
            if name not in typed:
                lines.append(f"# TYPE {name} {kind}")
                typed.add(name)
            v = value(now) if callable(value) else value
            inner = ",".join(f'{k}="{v2}"' for k, v2 in sorted(labels.items()))
            lines.append(f"{name}{{{inner}}} {v}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def broken_world(zoo: MetricZoo) -> None:
    """Metrics of a world where each shipped runbook's default condition holds."""
    h = HOST
    for cpu in ("0", "1"):
        zoo.counter("node_cpu_seconds_total", 0.02, instance=h, cpu=cpu, mode="idle")
        zoo.counter("node_cpu_seconds_total", 0.01, instance=h, cpu=cpu, mode="iowait")
        zoo.counter("node_cpu_seconds_total", 0.0, instance=h, cpu=cpu, mode="steal")
        zoo.counter("node_cpu_seconds_total", 0.97, instance=h, cpu=cpu, mode="user")
    zoo.gauge("node_load5", 6.0, instance=h)
    fs = {"instance": h, "mountpoint": "/var", "fstype": "ext4", "device": "/dev/sda2"}
    zoo.gauge("node_filesystem_avail_bytes", lambda now: 5e9 - 1e5 * (now - zoo.t0), **fs)
    zoo.gauge("node_filesystem_size_bytes", 100e9, **fs)
    zoo.gauge("node_filesystem_files_free", 5e6, **fs)
    zoo.gauge("node_filesystem_files", 6e6, **fs)
    zoo.gauge("node_filesystem_readonly", 0, **fs)
    zoo.gauge("node_memory_MemAvailable_bytes", 0.5e9, instance=h)
    zoo.gauge("node_memory_MemTotal_bytes", 16e9, instance=h)
    zoo.gauge("node_memory_SwapFree_bytes", 0.2e9, instance=h)
    zoo.gauge("node_memory_SwapTotal_bytes", 2e9, instance=h)
    # Prometheus has only seconds of history here, and rate(x[5m]) divides what it saw by
    # the whole window; the counter grows fast enough that the 5m rate passes 0.1 anyway.
    zoo.counter("node_pressure_memory_stalled_seconds_total", 30.0, instance=h)
    zoo.counter("node_vmstat_oom_kill", 0.01, start=3, instance=h)
    zoo.counter("node_vmstat_pgmajfault", 400, instance=h)
    for unit, state_on in (("nginx.service", "failed"), ("ssh.service", "active")):
        for state in ("active", "failed", "inactive"):
            zoo.gauge(
                "node_systemd_unit_state",
                1.0 if state == state_on else 0.0,
                instance=h,
                name=unit,
                state=state,
                type="service",
            )
    shop = "https://shop.example/health"
    zoo.gauge("probe_success", 0, instance=shop)
    zoo.gauge("probe_http_status_code", 0, instance=shop)
    zoo.gauge("probe_duration_seconds", 10.0, instance=shop)
    tls = "https://shop.example"
    zoo.gauge("probe_ssl_earliest_cert_expiry", lambda now: now + 5 * 86400, instance=tls)
    zoo.gauge(
        "probe_ssl_last_chain_expiry_timestamp_seconds", lambda now: now + 5 * 86400, instance=tls
    )
    group = {"consumergroup": "billing", "topic": "orders"}
    for part, lag in (("0", 4000.0), ("1", 3000.0)):
        zoo.gauge("kafka_consumergroup_lag", lag, partition=part, **group)
        zoo.gauge("kafka_consumergroup_current_offset", 1200.0, partition=part, **group)
        zoo.counter("kafka_topic_partition_current_offset", 5.0, topic="orders", partition=part)
    zoo.gauge("kafka_consumergroup_members", 2, consumergroup="billing")
    for i in range(1, 11):
        silent = i <= 8
        zoo.gauge(
            "mqtt_last_message_timestamp_seconds",
            (lambda now: now - 3600) if silent else (lambda now: now - 5),
            device=f"sensor-{i}",
        )
    zoo.gauge("broker_clients_connected", 0, broker="mqtt1")


# The alert that reaches each runbook, and the default action the broken world must yield.
CASES: dict[str, tuple[dict[str, str], str | None, dict[str, Any]]] = {
    "host-high-cpu": (
        {
            "alertname": "HostHighCpuLoad",
            "instance": HOST,
            "unit": "batch-worker.service",
            "severity": "warning",
        },
        "restart_service",
        {"unit": "batch-worker.service"},
    ),
    "disk-filling": (
        {
            "alertname": "HostOutOfDiskSpace",
            "instance": HOST,
            "mountpoint": "/var",
            "severity": "critical",
        },
        "vacuum_journal",
        {"max_size": "500M"},
    ),
    "memory-pressure": (
        {
            "alertname": "HostOutOfMemory",
            "instance": HOST,
            "unit": "java-app.service",
            "severity": "critical",
        },
        "restart_service",
        {"unit": "java-app.service"},
    ),
    "systemd-service-down": (
        {
            "alertname": "SystemdUnitFailed",
            "instance": HOST,
            "name": "nginx.service",
            "severity": "critical",
        },
        "restart_unit",
        {"unit": "nginx.service"},
    ),
    "http-endpoint-down": (
        {
            "alertname": "BlackboxProbeFailed",
            "instance": "https://shop.example/health",
            "service": "shop",
            "severity": "critical",
        },
        "restart_backend",
        {"unit": "shop.service"},
    ),
    "tls-cert-expiring": (
        {
            "alertname": "SSLCertExpiringSoon",
            "instance": "https://shop.example",
            "severity": "warning",
        },
        "renew_certificates",
        {},
    ),
    "kafka-consumer-lag": (
        {
            "alertname": "KafkaConsumerLag",
            "consumergroup": "billing",
            "topic": "orders",
            "service": "billing-consumer",
            "severity": "warning",
        },
        "restart_consumer",
        {"unit": "billing-consumer.service"},
    ),
    "mqtt-device-silent": (
        {"alertname": "MqttDeviceSilent", "device": "sensor-7", "severity": "warning"},
        "restart_broker",
        {},
    ),
    "generic-triage": (
        {"alertname": "SomethingOdd", "instance": HOST, "severity": "info"},
        None,
        {},
    ),
}


@contextlib.contextmanager
def zoo_prometheus(workdir: Path) -> Iterator[Any]:
    """A real Prometheus scraping a broken-world zoo, with a few seconds of history."""
    import httpx
    import realstack

    zoo = MetricZoo()
    broken_world(zoo)
    try:
        prom = realstack.start_prometheus(workdir, prometheus_config(zoo, realstack.free_port()))
    except BaseException:
        zoo.close()
        raise

    def ready() -> bool:
        # Enough history that rate() and predict_linear() have points at any query time.
        for q in (
            'count_over_time(up{job="zoo"}[1m]) >= 5',
            "rate(node_cpu_seconds_total[5m])",
            'up{job="shop"}',
            "rate(kafka_topic_partition_current_offset[5m])",
            "predict_linear(node_filesystem_avail_bytes[1h], 3600)",
        ):
            r = httpx.get(f"{prom.url}/api/v1/query", params={"query": q}, timeout=5).json()
            if not r["data"]["result"]:
                return False
        return True

    try:
        realstack.wait_for(ready, timeout=60, what="zoo metrics in Prometheus", interval=0.5)
        yield prom
    finally:
        prom.child.stop()
        zoo.close()


def prometheus_config(zoo: MetricZoo, dead_port: int) -> dict[str, Any]:
    """Scrape the zoo every second; a `shop` job whose target is down (up == 0)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "zoo",
                "honor_labels": True,
                "static_configs": [{"targets": [zoo.address]}],
            },
            {"job_name": "shop", "static_configs": [{"targets": [f"{LOOPBACK}:{dead_port}"]}]},
        ],
    }
