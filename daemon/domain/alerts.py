"""Alerts as watchkeeper sees them, whatever source they came from."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

AlertStatus = Literal["firing", "resolved"]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = 0xFFFFFFFFFFFFFFFF


def fingerprint(labels: Mapping[str, str]) -> str:
    """Return Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted name/value pairs).

    Using the same function as Alertmanager means an alert that reaches us both from
    Prometheus directly and through an Alertmanager webhook is recognised as one alert.
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        for b in name.encode() + b"\xff" + labels[name].encode() + b"\xff":
            h = ((h ^ b) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


class Alert(BaseModel):
    """A normalized alert: identity (fingerprint, labels), content, and its lease (`ends_at`)."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    status: AlertStatus = "firing"
    starts_at: datetime
    # The lease: an alert not renewed by this time resolves. None means the source
    # announces resolution itself (Alertmanager webhooks).
    ends_at: datetime | None = None
    generator_url: str = ""
    source: str = ""
    value: float | None = None

    @property
    def name(self) -> str:
        """The alertname label."""
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        """The severity label, or "none"."""
        return self.labels.get("severity", "none")
