"""The host an alert is about, derived from its labels: one small pure function.

Correlation (situations) and action leases key on it. The order follows what exporters
set: `instance` (with its port stripped), then `host`, `hostname`, `nodename`.
"""

from __future__ import annotations

from collections.abc import Mapping

HOST_LABELS = ("instance", "host", "hostname", "nodename")


def target_host(labels: Mapping[str, str]) -> str:
    """The target host named by the labels, or "" when none names one.

    `node1:9100` -> `node1`, `[::1]:9100` -> `::1`, `10.0.0.5` -> `10.0.0.5`; a URL in
    `instance` (blackbox probes) gives its host.
    """
    for name in HOST_LABELS:
        value = labels.get(name, "").strip()
        if value:
            return _strip_port(value) if name == "instance" else value
    return ""


def _strip_port(value: str) -> str:
    if "://" in value:  # blackbox exporter: instance="https://example.org:8443/health"
        value = value.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    if value.startswith("["):  # [v6]:port
        return value[1:].split("]", 1)[0]
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    return value
