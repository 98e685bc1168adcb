"""Durations written the way Prometheus and Alertmanager write them ("5m", "1h30m", "2d")."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
# Longer than anything a person means; any time plus it stays a valid datetime for ages.
MAX_DURATION = timedelta(days=100 * 365)


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse "90s", "5m", "1h30m", a number of seconds, or a timedelta into a timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h30m")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(float(text), text)
    s = text.strip()
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"expected a duration such as 30s, 5m, 1h30m, got {text!r}")
    return _bounded(total, text)


def _bounded(seconds: float, text: object) -> timedelta:
    # Checked before timedelta is built: 99999999999h would raise OverflowError, not ValueError.
    if not seconds <= MAX_DURATION.total_seconds():
        raise ValueError(f"duration {str(text)[:40]!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def format_duration(d: timedelta) -> str:
    """Render a timedelta compactly, e.g. 3900s -> "1h5m"."""
    secs = int(d.total_seconds())
    if secs <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(out)
