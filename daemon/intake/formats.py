"""Alert payload formats (Alertmanager API v2 postable alerts, webhook v4, single alerts).

Pure: bytes (or parsed JSON) and the time of arrival in, normalized `Alert`s out, or
`PayloadError` naming every problem. HTTP, Kafka and MQTT intake all come through here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator

from daemon.config.problems import problems
from daemon.domain.alert_model import Alert, fingerprint
from daemon.domain.limits import DEFAULT_LIMITS, AlertLimits, alert_problems

_FAR_FUTURE = timedelta(days=36_525)
_ZERO_YEAR = 1  # Go's zero time, 0001-01-01T00:00:00Z, means "not set"


class PayloadError(ValueError):
    """The payload cannot be accepted; `problems` says exactly what is wrong and where."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _check_labels(v: dict[str, str]) -> dict[str, str]:
    if not v.get("alertname"):
        raise ValueError("an alertname label is required")
    return v


class _AlertIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: datetime | None = None  # noqa: N815 - wire names
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815

    _labels = field_validator("labels")(_check_labels)


class PostableAlert(_AlertIn):
    """One element of Alertmanager's `POST /api/v2/alerts` body (as Prometheus sends)."""


class WebhookAlert(_AlertIn):
    """One alert in an Alertmanager webhook (payload version 4)."""

    status: Literal["firing", "resolved"]
    fingerprint: str = ""


class WebhookPayload(BaseModel):
    """Alertmanager's webhook payload, version 4; unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    receiver: str = ""
    status: Literal["firing", "resolved"] = "firing"
    alerts: list[WebhookAlert]
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    externalURL: str = ""  # noqa: N815


_POSTABLE = TypeAdapter(list[PostableAlert])
_WEBHOOK = TypeAdapter(WebhookPayload)
_WEBHOOK_ALERT = TypeAdapter(WebhookAlert)
_POSTABLE_ALERT = TypeAdapter(PostableAlert)


def _set(t: datetime | None) -> datetime | None:
    if t is None or t.year == _ZERO_YEAR:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _errors(prefix: str, exc: ValidationError) -> PayloadError:
    return PayloadError(problems(exc.errors(include_url=False), prefix=prefix, noun="field")[:20])


def _normalize(
    a: _AlertIn,
    *,
    now: datetime,
    resolve_timeout: timedelta | None,
    source: str,
    where: str | int,
    fp: str = "",
    limits: AlertLimits = DEFAULT_LIMITS,
) -> Alert:
    at = f"alerts[{where}]" if isinstance(where, int) else where
    problems = alert_problems(a.labels, a.annotations, limits)
    if problems:
        raise PayloadError([f"{at}.{p}" for p in problems])
    starts = _set(a.startsAt) or now
    ends = _set(a.endsAt)
    if starts > now + _FAR_FUTURE:
        # Clock skew is tolerated; a start near year 9999 overflows every sum taken with it.
        raise PayloadError([f"{at}.startsAt: more than 100 years ahead of now"])
    ceiling = now + limits.max_lease
    if ends is not None and ends > ceiling:
        # A lease no longer than the ceiling: a live sender renews it, a dead one ends.
        ends = max(ceiling, starts)
    # isinstance, not getattr with a default: a missing attribute on a pydantic model costs
    # an exception per alert on the hot path.
    status: Literal["firing", "resolved"] = a.status if isinstance(a, WebhookAlert) else "firing"
    if ends is None and resolve_timeout is not None and status == "firing":
        # Alertmanager semantics: an alert without endsAt holds a lease of resolve_timeout.
        ends = now + resolve_timeout
    if ends is not None and ends < starts:
        raise PayloadError([f"{at}.endsAt: is before startsAt"])
    if status == "firing" and ends is not None and ends <= now:
        status = "resolved"
    computed = fingerprint(a.labels)
    if fp and fp != computed:
        # A sender's fingerprint names the alert it updates or resolves: it must be the
        # labels' own, or one alert could resolve another's incident.
        raise PayloadError(
            [f"{at}.fingerprint: {fp[:32]!r} is not the fingerprint of its labels ({computed})"]
        )
    return Alert(
        fingerprint=computed,
        labels=a.labels,
        annotations=a.annotations,
        status=status,
        starts_at=starts,
        ends_at=ends,
        generator_url=a.generatorURL,
        source=source,
    )


def parse_postable_alerts(
    body: bytes | str,
    *,
    now: datetime,
    resolve_timeout: timedelta,
    source: str = "api_v2",
    limits: AlertLimits = DEFAULT_LIMITS,
) -> list[Alert]:
    """Parse a `POST /api/v2/alerts` body (a JSON array of postable alerts)."""
    try:
        items = _POSTABLE.validate_json(body)
    except ValidationError as e:
        raise _errors("alerts", e) from None
    return [
        _normalize(
            a, now=now, resolve_timeout=resolve_timeout, source=source, where=i, limits=limits
        )
        for i, a in enumerate(items)
    ]


def parse_postable_alert(
    body: bytes | str,
    *,
    now: datetime,
    resolve_timeout: timedelta,
    source: str,
    limits: AlertLimits = DEFAULT_LIMITS,
) -> Alert:
    """Parse one postable alert object straight from its JSON (the stream sources' hot path)."""
    try:
        a = _POSTABLE_ALERT.validate_json(body)
    except ValidationError as e:
        raise _errors("alert", e) from None
    return _normalize(
        a, now=now, resolve_timeout=resolve_timeout, source=source, where="alert", limits=limits
    )


def parse_webhook(
    body: bytes | str,
    *,
    now: datetime,
    source: str = "alertmanager",
    limits: AlertLimits = DEFAULT_LIMITS,
) -> list[Alert]:
    """Parse an Alertmanager webhook (v4). Firing alerts carry no lease: Alertmanager resolves."""
    try:
        payload = _WEBHOOK.validate_json(body)
    except ValidationError as e:
        raise _errors("", e) from None
    if payload.version != "4":
        raise PayloadError(
            [f"version: expected webhook payload version 4, got {payload.version!r}"]
        )
    return [
        _normalize(
            a,
            now=now,
            resolve_timeout=None,
            source=source,
            where=i,
            fp=a.fingerprint,
            limits=limits,
        )
        for i, a in enumerate(payload.alerts)
    ]


def parse_single_alert(
    obj: Any,
    *,
    now: datetime,
    resolve_timeout: timedelta,
    source: str,
    limits: AlertLimits = DEFAULT_LIMITS,
) -> Alert:
    """Parse one alert object (either shape: with `status` it is read as a webhook alert)."""
    try:
        # Chosen by shape rather than tried in turn, so errors name fields, not model classes.
        shape = _WEBHOOK_ALERT if isinstance(obj, dict) and "status" in obj else _POSTABLE_ALERT
        a: _AlertIn = shape.validate_python(obj)
    except ValidationError as e:
        raise _errors("alert", e) from None
    lease = None if isinstance(a, WebhookAlert) else resolve_timeout
    return _normalize(
        a,
        now=now,
        resolve_timeout=lease,
        source=source,
        where="alert",
        fp=getattr(a, "fingerprint", ""),
        limits=limits,
    )
