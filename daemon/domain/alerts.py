"""Alerts as watchkeeper sees them, whatever source they came from."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
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
    return _fnv_fingerprint(tuple(sorted(labels.items())))


# Memoized: sources re-send the same label sets on every evaluation, and FNV byte by byte
# in Python costs far more than a sort and a dict lookup.
@lru_cache(maxsize=65_536)
def _fnv_fingerprint(pairs: tuple[tuple[str, str], ...]) -> str:
    data = b"".join(name.encode() + b"\xff" + value.encode() + b"\xff" for name, value in pairs)
    h, prime, mask = _FNV_OFFSET, _FNV_PRIME, _MASK
    for b in data:
        h = ((h ^ b) * prime) & mask
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
