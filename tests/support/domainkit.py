"""Alerts as a parser hands them to the core, at a fixed instant: for tests of the pure core."""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.domain import Alert, fingerprint

T0 = datetime(2026, 11, 28, 23, 27, 5, tzinfo=UTC)


def mk(
    name: str = "HighScrapeDuration",
    *,
    status: str = "firing",
    ends: datetime | None = None,
    starts: datetime = T0,
    annotations: dict[str, str] | None = None,
    **labels: str,
) -> Alert:
    """An alert as a parser would hand it to the core."""
    lbl = {"alertname": name, **labels}
    return Alert(
        fingerprint=fingerprint(lbl),
        labels=lbl,
        annotations=annotations or {},
        status=status,  # type: ignore[arg-type]
        starts_at=starts,
        ends_at=ends,
    )
