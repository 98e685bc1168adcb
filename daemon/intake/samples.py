"""Metric samples as streams carry them: JSON objects, arrays of them, or a bare number.

Pure: bytes and the time of arrival in, `Sample`s out, or `PayloadError` naming every
problem. The JSON shape is `{"metric": name, "labels": {...}, "value": 1.5, "ts": t}` where
`ts` is RFC 3339 or epoch seconds (milliseconds when above 2*10^10) and may be left out
(then the time of arrival is used). A bare number (`21.5`) needs its metric name from the
topic (an MQTT topic template with `{metric}`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator

from daemon.config.problems import problems
from daemon.domain.rule_model import Sample
from daemon.intake.formats import PayloadError

_LabelValue = str | int | float | bool


class SampleIn(BaseModel):
    """One sample on the wire; `metric` may come from the topic instead."""

    model_config = ConfigDict(extra="ignore")

    metric: str = ""
    # Numbers and booleans are accepted and kept as text (devices send them).
    labels: dict[str, _LabelValue] = {}
    value: float
    # Numbers are epoch seconds, or milliseconds above 2e10 (pydantic's rule).
    ts: datetime | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


_ONE = TypeAdapter(SampleIn)
_MANY = TypeAdapter(list[SampleIn])


def _when(ts: datetime | None, now: datetime) -> datetime:
    if ts is None:
        return now
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _label_text(v: _LabelValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else f"{v:g}"


def _problems(prefix: str, exc: ValidationError) -> PayloadError:
    return PayloadError(problems(exc.errors(include_url=False), prefix=prefix, noun="field")[:20])


def parse_samples(
    body: bytes | str,
    *,
    now: datetime,
    metric: str = "",
    labels: Mapping[str, str] | None = None,
) -> list[Sample]:
    """Parse one payload of samples; `metric`/`labels` (from the topic) fill what it leaves out.

    Labels in the payload win over labels from the topic.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    head = text.lstrip()[:1]
    try:
        if head == "{":
            items = [_ONE.validate_json(text)]
            prefix = "sample"
        elif head == "[":
            items = _MANY.validate_json(text)
            prefix = "samples"
        else:
            items = [SampleIn(metric=metric, value=_bare_number(text))]
            prefix = "sample"
    except ValidationError as e:
        raise _problems("samples" if head == "[" else "sample", e) from None
    base = dict(labels or {})
    out = []
    for i, item in enumerate(items):
        name = item.metric or metric
        if not name:
            where = f"{prefix}[{i}]" if head == "[" else prefix
            raise PayloadError(
                [f"{where}.metric: required (or put {{metric}} in the topic template)"]
            )
        merged = {**base, **{k: _label_text(v) for k, v in item.labels.items()}}
        out.append(Sample(name, merged, item.value, _when(item.ts, now)))
    return out


def _bare_number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        expected = "a JSON sample, an array of samples or a bare number"
        raise PayloadError([f"body: expected {expected}, got {text[:40]!r}"]) from None
    if not math.isfinite(value):
        raise PayloadError(["value: must be a finite number"])
    return value
