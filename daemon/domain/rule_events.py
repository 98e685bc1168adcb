"""Facts about metric rules: what was configured, and each series' changes of phase.

Each series episode (from first pending/seen until it is dropped) is its own stream, so a
series that comes and goes never reuses a stream's versions.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from daemon.domain.events import DomainEvent
from daemon.domain.rules import MetricRule

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
