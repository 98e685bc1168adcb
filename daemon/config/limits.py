"""`limits:`: the largest alert the intake accepts and how long a list page may be."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from daemon.config.types import Duration, Section
from daemon.domain.limits import AlertLimits, StateLimits


class LimitsConfig(Section):
    """Bounds on what a sender or a viewer can make the daemon hold (see README, Limits)."""

    max_labels: int = Field(default=64, gt=0)
    max_label_name_bytes: int = Field(default=256, gt=0)
    max_label_value_bytes: int = Field(default=4096, gt=0)
    max_annotations: int = Field(default=64, gt=0)
    max_annotation_value_bytes: int = Field(default=16_384, gt=0)
    max_lease: Duration = timedelta(days=7)
    max_silence: Duration = timedelta(days=30)
    page_size: int = Field(default=100, gt=0, le=10_000)
    max_alert_bytes: int = Field(default=8192, gt=0)
    max_open_incidents: int = Field(default=2_000, gt=0)
    max_alerts_per_incident: int = Field(default=10_000, gt=0)
    max_alerts: int = Field(default=10_000, gt=0)

    def state_limits(self) -> StateLimits:
        """How much the hot set may hold, as the pure core takes it."""
        return StateLimits(
            max_open_incidents=self.max_open_incidents,
            max_alerts_per_incident=self.max_alerts_per_incident,
            max_alerts=self.max_alerts,
        )

    def alert_limits(self) -> AlertLimits:
        """The intake's limits as the pure core takes them."""
        return AlertLimits(
            max_labels=self.max_labels,
            max_label_name_bytes=self.max_label_name_bytes,
            max_label_value_bytes=self.max_label_value_bytes,
            max_annotations=self.max_annotations,
            max_annotation_value_bytes=self.max_annotation_value_bytes,
            max_alert_bytes=self.max_alert_bytes,
            max_lease=self.max_lease,
        )
