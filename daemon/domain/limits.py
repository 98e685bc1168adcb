"""How big one alert may be: label and annotation counts and sizes, and its lease.

Alertmanager-like limits with safe defaults, so no sender can grow state without bound.
Pure: `alert_problems` says what is over a limit; the intake refuses (4xx, dead letter).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel, ConfigDict

# Prometheus' and Alertmanager's label name syntax: "", "a b" and NUL are refused.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class AlertLimits(BaseModel):
    """The largest alert the intake accepts, and the longest lease it grants."""

    model_config = ConfigDict(frozen=True)

    max_labels: int = 64
    max_label_name_bytes: int = 256
    max_label_value_bytes: int = 4096
    max_annotations: int = 64
    max_annotation_value_bytes: int = 16_384
    # An endsAt further ahead is cut to now + max_lease (Prometheus renews every interval).
    max_lease: timedelta = timedelta(days=7)


DEFAULT_LIMITS = AlertLimits()


def alert_problems(
    labels: Mapping[str, str], annotations: Mapping[str, str], limits: AlertLimits
) -> list[str]:
    """What is wrong with one alert's labels and annotations (empty when it is acceptable)."""
    out = []
    if len(labels) > limits.max_labels:
        out.append(
            f"labels: {len(labels)} labels, more than limits.max_labels ({limits.max_labels})"
        )
    for name, value in labels.items():
        if len(name.encode()) > limits.max_label_name_bytes:
            out.append(
                f"labels: a label name is longer than limits.max_label_name_bytes "
                f"({limits.max_label_name_bytes})"
            )
        elif LABEL_NAME.fullmatch(name) is None:
            out.append(f"labels: {name[:64]!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if len(value.encode()) > limits.max_label_value_bytes:
            out.append(
                f"labels.{name[:64]}: value is longer than limits.max_label_value_bytes "
                f"({limits.max_label_value_bytes})"
            )
    if len(annotations) > limits.max_annotations:
        out.append(
            f"annotations: {len(annotations)} annotations, more than limits.max_annotations "
            f"({limits.max_annotations})"
        )
    for name, value in annotations.items():
        if len(name.encode()) + len(value.encode()) > limits.max_annotation_value_bytes:
            out.append(
                f"annotations.{name[:64]}: longer than limits.max_annotation_value_bytes "
                f"({limits.max_annotation_value_bytes})"
            )
    return out[:10]
