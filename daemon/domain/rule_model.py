"""Rules over metric streams, in the spirit of Prometheus alerting rules. Pure: time is passed in.

A rule watches series (one label set of one metric) and moves each through
inactive -> pending -> firing -> inactive:

- `threshold`: `value <op> threshold` starts it; after `for_duration` it fires; it resolves
  when the value no longer satisfies `<op> clear` (the clear threshold gives hysteresis,
  so a value wobbling around the threshold does not flap).
- `absence`: fires when a series that reported stops reporting for `absent_for`.
- `query`: a PromQL expression evaluated by a Prometheus source; every series in the
  result is "present" and goes through pending/firing like a threshold; a series that
  leaves the result resolves.

This module holds the rule definitions, the per-series state, the commands that feed
samples in, and the pure transition functions. The decisions that turn transitions into
events live in `daemon.domain.rule_decide`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict, model_validator

from daemon.domain.alert_model import Alert, fingerprint
from daemon.domain.durations import format_duration
from daemon.domain.events import DomainEvent
from daemon.domain.matchers import Matcher, matches_all

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
RuleKind = Literal["threshold", "absence", "query"]
Phase = Literal["inactive", "pending", "firing"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_TEMPLATE = re.compile(r"\{\{\s*\$(value|labels\.([a-zA-Z_][a-zA-Z0-9_]*))\s*\}\}")

# Absence is recorded coarsely (see `seen_due`): a series' last-seen time is written at most
# once per absent_for / SEEN_EVERY, so an absence fires between absent_for and
# absent_for * (1 + 1/SEEN_EVERY) after the last sample, never earlier.
SEEN_EVERY = 2


class MetricRule(BaseModel):
    """One alerting rule over a metric stream (or a PromQL query), as configured."""

    model_config = ConfigDict(frozen=True)

    name: str
    alert: str
    kind: RuleKind
    metric: str = ""
    matchers: tuple[Matcher, ...] = ()
    op: Comparison = ">"
    threshold: float = 0.0
    clear: float | None = None
    for_duration: timedelta = timedelta(0)
    absent_for: timedelta | None = None
    expr: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> MetricRule:
        if self.kind in ("threshold", "absence") and not self.metric:
            raise ValueError(f"a {self.kind} rule needs the metric it watches")
        if self.kind == "absence" and (self.absent_for is None or self.absent_for <= timedelta(0)):
            raise ValueError("an absence rule needs absent_for greater than zero")
        if self.kind == "query" and not self.expr:
            raise ValueError("a query rule needs expr (PromQL)")
        if self.kind == "threshold" and self.clear is not None:
            if self.op in (">", ">=") and self.clear > self.threshold:
                raise ValueError(f"clear ({self.clear}) must not be above threshold for {self.op}")
            if self.op in ("<", "<=") and self.clear < self.threshold:
                raise ValueError(f"clear ({self.clear}) must not be below threshold for {self.op}")
            if self.op in ("==", "!="):
                raise ValueError(f"clear needs an ordering comparison, not {self.op}")
        return self

    def selects(self, metric: str, labels: Mapping[str, str]) -> bool:
        """Whether a sample of `metric` with these labels belongs to this rule."""
        return metric == self.metric and matches_all(self.matchers, labels)

    def triggered(self, value: float) -> bool:
        """Whether the value meets the rule's condition (starts pending/firing)."""
        return _COMPARE[self.op](value, self.threshold)

    def holds(self, value: float) -> bool:
        """Whether a firing series stays firing at this value (the clear threshold, if any)."""
        limit = self.threshold if self.clear is None else self.clear
        return _COMPARE[self.op](value, limit)

    @property
    def condition(self) -> str:
        """The condition in words, e.g. `temperature > 80`."""
        if self.kind == "query":
            return self.expr
        if self.kind == "absence":
            return f"{self.metric} absent for {format_duration(self.absent_for or timedelta(0))}"
        return f"{self.metric} {self.op} {_num(self.threshold)}"

    def selection(self) -> tuple[RuleKind, str, tuple[Matcher, ...], str]:
        """What decides which series the rule tracks; a change here starts the rule afresh."""
        return (self.kind, self.metric, self.matchers, self.expr)


class SeriesState(BaseModel):
    """What one rule knows about one series: its phase, since when, and its episode stream."""

    model_config = ConfigDict(frozen=True)

    rule: str
    labels: dict[str, str]
    stream_id: UUID
    version: int
    phase: Phase = "inactive"
    active_since: datetime | None = None
    value: float | None = None
    # Recorded arrival time (absence rules only); coarse, see SEEN_EVERY.
    last_seen: datetime | None = None
    # The alert this series fired, so it is resolved even if the rule's labels change.
    fingerprint: str = ""


class RuleBook(BaseModel):
    """Rule definitions as last configured (recorded as events) and every tracked series."""

    rules: dict[str, MetricRule] = {}
    version: int = 0
    by_metric: dict[str, list[str]] = {}
    # rule name -> series key -> state; inactive threshold/query series are not kept.
    series: dict[str, dict[str, SeriesState]] = {}
    # Episodes started so far: each gets its own stream, so ids never repeat.
    episodes: int = 0
    # When rule evaluation last resumed after a start: silence while the daemon was down
    # is not counted as a series going absent.
    resumed_at: datetime | None = None


# --- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at one time."""

    metric: str
    labels: Mapping[str, str]
    value: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class ObserveSamples:
    """Samples arrived from a stream; rules decide whether any series changes phase."""

    samples: tuple[Sample, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class QuerySeries:
    """One series of a PromQL rule's result."""

    labels: Mapping[str, str]
    value: float | None


@dataclass(frozen=True, slots=True)
class ObserveQueryResult:
    """A query rule was evaluated: these series are in its result, all others are not."""

    rule: str
    series: tuple[QuerySeries, ...]


@dataclass(frozen=True, slots=True)
class ConfigureRules:
    """The rules in the configuration now; differences from the recorded ones are recorded."""

    rules: tuple[MetricRule, ...] = field(default=())
    # True when the daemon starts: absence clocks restart from now (see RuleBook.resumed_at).
    resuming: bool = False


# --- pure transitions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of phase for one series, with the reason in words."""

    to: Phase
    active_since: datetime
    reason: str


def evaluate(
    rule: MetricRule,
    state: SeriesState | None,
    value: float | None,
    at: datetime,
    *,
    present: bool = True,
) -> Transition | None:
    """What one observation does to one series under a threshold or query rule.

    `present=False` means the series is not in a query result (or has no value). Returns
    None when nothing changes: a repeat of the same situation is not a fact worth storing.
    """
    phase: Phase = state.phase if state else "inactive"
    if rule.kind == "query":
        active = holding = present
    else:
        active = present and value is not None and rule.triggered(value)
        holding = present and value is not None and rule.holds(value)
    if phase == "firing":
        if holding:
            return None
        return Transition("inactive", at, _why_resolved(rule, value, present))
    if not active:
        if phase == "pending":
            return Transition("inactive", at, _why_cleared(rule, value, present))
        return None
    since = state.active_since if phase == "pending" and state and state.active_since else at
    waited = at - since
    if waited >= rule.for_duration:
        held = f" for {format_duration(waited)}" if rule.for_duration else ""
        return Transition("firing", since, f"{_what(rule, value)}{held}")
    if phase == "pending":
        return None
    wait = format_duration(rule.for_duration)
    return Transition("pending", since, f"{_what(rule, value)}; fires if it holds for {wait}")


def seen_due(rule: MetricRule, state: SeriesState | None, now: datetime) -> bool:
    """Whether an absence rule should record that the series reported at `now`."""
    if state is None or state.last_seen is None or state.phase == "firing":
        return True
    assert rule.absent_for is not None
    return now - state.last_seen >= rule.absent_for / SEEN_EVERY


def absence_due(
    rule: MetricRule, state: SeriesState, now: datetime, resumed_at: datetime | None = None
) -> bool:
    """Whether a series has been silent long enough for its absence rule to fire.

    The recorded last-seen time may be up to absent_for/SEEN_EVERY older than the real last
    sample, so the wait includes that margin: an absence never fires early. Time before
    `resumed_at` (the daemon was down, its sources could not deliver) does not count.
    """
    if state.phase == "firing" or state.last_seen is None or rule.absent_for is None:
        return False
    since = max(state.last_seen, resumed_at) if resumed_at else state.last_seen
    return now >= since + rule.absent_for + rule.absent_for / SEEN_EVERY


def series_key(labels: Mapping[str, str]) -> str:
    """A canonical text key for a label set (cheaper than a hash, readable in state dumps)."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def finite(value: float | None) -> float | None:
    """The value, or None for NaN/infinity (which JSON cannot carry)."""
    if value is None or not math.isfinite(value):
        return None
    return value


def alert_labels(rule: MetricRule, series_labels: Mapping[str, str]) -> dict[str, str]:
    """Series labels, then the rule's labels over them, then alertname (as Prometheus does)."""
    labels = {k: v for k, v in series_labels.items() if k != "__name__"}
    labels.update(rule.labels)
    labels["alertname"] = rule.alert
    return labels


def rule_alert(
    rule: MetricRule, series_labels: Mapping[str, str], value: float | None, active_since: datetime
) -> Alert:
    """The alert a firing series raises: no lease, the rule resolves it explicitly."""
    labels = alert_labels(rule, series_labels)
    return Alert(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={k: expand(v, labels, value) for k, v in rule.annotations.items()},
        status="firing",
        starts_at=active_since,
        ends_at=None,
        source=f"rule:{rule.name}",
        value=finite(value),
    )


def expand(template: str, labels: Mapping[str, str], value: float | None) -> str:
    """Fill `{{ $labels.name }}` and `{{ $value }}` (the Prometheus template subset rules use)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) == "value":
            return "" if value is None else _num(value)
        return labels.get(m.group(2), "")

    return _TEMPLATE.sub(sub, template)


def _num(v: float) -> str:
    return f"{v:g}"


def _what(rule: MetricRule, value: float | None) -> str:
    if rule.kind == "query":
        return "in the result of the query"
    return f"value {_num(value or 0.0)} {rule.op} {_num(rule.threshold)}"


def _why_cleared(rule: MetricRule, value: float | None, present: bool) -> str:
    if rule.kind == "query" or not present or value is None:
        return "left the query result before for: elapsed"
    return f"value {_num(value)} no longer {rule.op} {_num(rule.threshold)} before for: elapsed"


def _why_resolved(rule: MetricRule, value: float | None, present: bool) -> str:
    if rule.kind == "query" or not present or value is None:
        return "series left the query result"
    limit = rule.threshold if rule.clear is None else rule.clear
    return f"value {_num(value)} no longer {rule.op} {_num(limit)}"


# --- events: what was configured, and each series' changes of phase -----------------
#
# Each series episode (from first pending/seen until it is dropped) is its own stream, so a
# series that comes and goes never reuses a stream's versions.

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/rules")
# The stream of rule configurations.
RULEBOOK_ID = uuid5(_NS, "rulebook")


def episode_stream_id(rule: str, series: str, episode: int) -> UUID:
    """Stream of one series episode under one rule."""
    return uuid5(_NS, f"series|{rule}|{series}|{episode}")


class RulesConfigured(DomainEvent):
    """The configured rules changed (or were configured for the first time)."""

    rules: tuple[MetricRule, ...]
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class RulesResumed(DomainEvent):
    """Rule evaluation resumed after a start; absence is measured from here at the earliest."""


class _SeriesEvent(DomainEvent):
    rule: str
    series: str


class RulePending(_SeriesEvent):
    """A series met the rule's condition; it fires if the condition holds for `for:`."""

    labels: dict[str, str]
    value: float | None
    active_since: datetime
    reason: str


class RulePendingCleared(_SeriesEvent):
    """A pending series stopped meeting the condition before `for:` elapsed."""

    value: float | None
    reason: str


class RuleFiring(_SeriesEvent):
    """A series fired: an alert with the rule's and the series' labels is raised."""

    labels: dict[str, str]
    value: float | None
    active_since: datetime
    fingerprint: str
    reason: str


class RuleResolved(_SeriesEvent):
    """A firing series cleared (or its rule went away); its alert is resolved."""

    value: float | None
    fingerprint: str
    reason: str


class SeriesSeen(_SeriesEvent):
    """A series watched by an absence rule reported (recorded coarsely; see rules.SEEN_EVERY)."""

    labels: dict[str, str]
    at: datetime


class SeriesForgotten(_SeriesEvent):
    """A series is no longer tracked (its rule was removed or now selects differently)."""

    reason: str
