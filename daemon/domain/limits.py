"""How big one alert may be: label and annotation counts and sizes, and its lease.

Alertmanager-like limits with safe defaults, so no sender can grow state without bound.
Pure: `alert_problems` says what is over a limit; the intake refuses (4xx, dead letter).
`StateLimits` bounds how many alerts and incidents the hot set holds; `decide` refuses an
alert past them with a dead letter (see `hot_set_problem`).
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
    # All names and values of labels and annotations together: what one alert may weigh.
    max_alert_bytes: int = 8192
    # An endsAt further ahead is cut to now + max_lease (Prometheus renews every interval).
    max_lease: timedelta = timedelta(days=7)


DEFAULT_LIMITS = AlertLimits()


class StateLimits(BaseModel):
    """How many alerts and incidents the hot set may hold (their product bounds memory)."""

    model_config = ConfigDict(frozen=True)

    # Hot incidents: open, acknowledged, or resolved and waiting out the reopen window.
    max_open_incidents: int = 2_000
    # Alerts attached to one incident, firing or resolved, until it closes.
    max_alerts_per_incident: int = 10_000
    # Every alert held: in incidents and silenced.
    max_alerts: int = 10_000


def hot_set_problem(
    *, alerts: int, incidents: int, in_incident: int | None, limits: StateLimits
) -> str:
    """Why one more alert cannot be held ('' when it can).

    `in_incident` is how many alerts its incident holds, None when it would open a new one
    (a silenced alert joins no incident: pass `incidents=0, in_incident=0`).
    """
    if alerts >= limits.max_alerts:
        return f"hot set holds {alerts} alerts, limits.max_alerts ({limits.max_alerts})"
    if in_incident is None and incidents >= limits.max_open_incidents:
        return (
            f"{incidents} incidents open, limits.max_open_incidents "
            f"({limits.max_open_incidents}); a new group cannot open one"
        )
    if in_incident is not None and in_incident >= limits.max_alerts_per_incident:
        return (
            f"its incident holds {in_incident} alerts, limits.max_alerts_per_incident "
            f"({limits.max_alerts_per_incident})"
        )
    return ""


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
    total = sum(len(k.encode()) + len(v.encode()) for k, v in labels.items())
    total += sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if total > limits.max_alert_bytes and not out:
        out.append(
            f"labels and annotations: {total} bytes, more than limits.max_alert_bytes "
            f"({limits.max_alert_bytes})"
        )
    return out[:10]
