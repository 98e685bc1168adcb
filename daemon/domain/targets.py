"""The host an incident is about, from its labels: pure rules, no inventory, no I/O.

By default the first of `instance` (port stripped), `host`, `hostname`, `nodename` that an
alert carries names the target. A runbook may say instead, e.g. `target: "{labels.node}"`.
Alert labels are untrusted: a target derived from them only *names* a host; whether that
host exists and how to reach it is the inventory's answer, never the alert's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

DEFAULT_LABELS = ("instance", "host", "hostname", "nodename")
_LABEL_SLOT = re.compile(r"\{labels\.([A-Za-z_][A-Za-z0-9_]*)\}")
_PORT = re.compile(r"^(?P<host>[^:\[\]]+):\d{1,5}$")
_V6_PORT = re.compile(r"^\[(?P<host>[0-9A-Fa-f:.]+)\](?::\d{1,5})?$")


class TargetRules(BaseModel):
    """Which labels name the target host, in order, and whether to strip a `:port`."""

    model_config = ConfigDict(frozen=True)

    labels: tuple[str, ...] = DEFAULT_LABELS
    strip_port: bool = True


def strip_port(value: str) -> str:
    """`web-3:9100` -> `web-3`, `[::1]:9100` -> `::1`, a URL (blackbox probes'
    `instance="https://example.org:8443/health"`) -> its host; anything else unchanged."""
    v = value.strip()
    if "://" in v:
        v = v.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    m = _V6_PORT.match(v) or _PORT.match(v)
    return m.group("host") if m else v


def derive_target(
    labels: Mapping[str, str], rules: TargetRules, template: str | None = None
) -> tuple[str, str]:
    """The target host and how it was found; ("", why not) when no rule names one."""
    if template:
        missing = [n for n in _LABEL_SLOT.findall(template) if not labels.get(n)]
        if missing:
            return "", f"the runbook's target {template!r} needs label {missing[0]!r}"
        value = _LABEL_SLOT.sub(lambda m: labels[m.group(1)], template)
        host = strip_port(value) if rules.strip_port else value.strip()
        return host, f"runbook target {template}"
    for name in rules.labels:
        value = labels.get(name, "").strip()
        if value:
            host = strip_port(value) if rules.strip_port else value
            return host, f"label {name}={value}"
    return "", f"no label names a host (looked at {', '.join(rules.labels)})"


DEFAULT_RULES = TargetRules()


def target_host(labels: Mapping[str, str], rules: TargetRules = DEFAULT_RULES) -> str:
    """The host the labels name by `rules` (the defaults unless configured), or ""."""
    return derive_target(labels, rules)[0]
