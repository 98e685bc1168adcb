"""Stream payloads (Kafka records, MQTT messages) to commands, by the format configured.

Pure: one payload and the time of arrival in, the commands it means out, or a
`RecordDeadLetter` with the reason when it cannot be read. Formats:

- `webhook`: an Alertmanager webhook (version 4);
- `postable`: Alertmanager's API v2 array of postable alerts (what Prometheus sends);
- `alert`: one alert object (webhook-style with `status`, or postable-style);
- `samples`: metric samples (see `daemon.samples`), evaluated by rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from uuid import UUID

from pydantic_core import from_json

from daemon.config.sources import PayloadFormat
from daemon.domain.alert_model import Alert, fingerprint
from daemon.domain.commands import Command, ReceiveAlert, RecordDeadLetter
from daemon.domain.limits import DEFAULT_LIMITS, AlertLimits, alert_problems
from daemon.domain.rule_model import ObserveSamples, Sample
from daemon.intake.formats import (
    PayloadError,
    parse_postable_alert,
    parse_postable_alerts,
    parse_single_alert,
    parse_webhook,
)
from daemon.intake.samples import parse_samples

# Dead letters keep the head of the payload, enough to see what it was.
DEAD_LETTER_BYTES = 4096


def parse_alerts(
    fmt: PayloadFormat,
    body: bytes,
    *,
    now: datetime,
    resolve_timeout: timedelta,
    source: str,
    limits: AlertLimits = DEFAULT_LIMITS,
) -> list[Alert]:
    """Alerts in one payload of an alert format, each within `limits`."""
    if fmt == "webhook":
        return parse_webhook(body, now=now, source=source, limits=limits)
    if fmt == "postable":
        return parse_postable_alerts(
            body, now=now, resolve_timeout=resolve_timeout, source=source, limits=limits
        )
    if b'"status"' not in body:
        # No `status` anywhere, so not webhook-shaped: validate straight from the bytes (no
        # json.loads). Any problem is reported by the general path below.
        try:
            return [
                parse_postable_alert(
                    body, now=now, resolve_timeout=resolve_timeout, source=source, limits=limits
                )
            ]
        except PayloadError:
            pass
    try:
        # pydantic's parser, not json.loads: it refuses lone surrogate escapes ("\\udcff"),
        # which json.loads lets through and which then fail at commit, wedging the source.
        obj = from_json(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError([f"alert: malformed JSON ({e})"]) from None
    return [
        parse_single_alert(
            obj, now=now, resolve_timeout=resolve_timeout, source=source, limits=limits
        )
    ]


def with_labels(alert: Alert, labels: Mapping[str, str]) -> Alert:
    """The alert with topic labels added (its own labels win), fingerprinted anew."""
    extra = {k: v for k, v in labels.items() if k not in alert.labels}
    if not extra:
        return alert
    merged = {**extra, **alert.labels}
    return alert.model_copy(update={"labels": merged, "fingerprint": fingerprint(merged)})


def decode(
    fmt: PayloadFormat,
    body: bytes,
    *,
    now: datetime,
    resolve_timeout: timedelta,
    source: str,
    labels: Mapping[str, str] | None = None,
    metric: str = "",
    limits: AlertLimits = DEFAULT_LIMITS,
) -> list[Command]:
    """The commands one payload means; raises `PayloadError` when it cannot be read."""
    if fmt == "samples":
        samples = parse_samples(body, now=now, metric=metric, labels=labels)
        return [ObserveSamples(tuple(samples), source)]
    alerts = parse_alerts(
        fmt, body, now=now, resolve_timeout=resolve_timeout, source=source, limits=limits
    )
    if labels:
        alerts = [with_labels(a, labels) for a in alerts]
        problems = [
            f"alert {a.name or a.fingerprint} with topic labels: {p}"
            for a in alerts
            for p in alert_problems(a.labels, a.annotations, limits)
        ]
        if problems:
            raise PayloadError(problems[:10])
    return [ReceiveAlert(a) for a in alerts]


def dead_letter(
    record_id: UUID, source: str, problems: Iterable[str], body: bytes, size: int | None = None
) -> RecordDeadLetter:
    """A dead-letter record for a payload that could not be read.

    `size` is what arrived when `body` is only its head (a body refused as too large).
    """
    return RecordDeadLetter(
        record_id=record_id,
        source=source,
        reason="; ".join(problems),
        payload=body[:DEAD_LETTER_BYTES].decode("utf-8", "replace"),
        size=len(body) if size is None else size,
    )


def coalesce(commands: Iterable[Command]) -> list[Command]:
    """Merge runs of ObserveSamples into one (fewer decisions, same outcome, same order)."""
    out: list[Command] = []
    run: list[Sample] = []
    source = ""
    for cmd in commands:
        if isinstance(cmd, ObserveSamples):
            run.extend(cmd.samples)
            source = cmd.source
            continue
        if run:
            out.append(ObserveSamples(tuple(run), source))
            run = []
        out.append(cmd)
    if run:
        out.append(ObserveSamples(tuple(run), source))
    return out
