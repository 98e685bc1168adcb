"""Escalation policies: which policy an incident follows, its steps in order, when to stop.

A policy is a list of levels. Each level pages its channels, then pages them again
`repeat` more times `repeat_every` apart; the next level follows `delay` after the
previous page. A step is one (level, round) page. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from daemon.domain.matchers import Matcher, matches_all
from daemon.domain.state import Incident, World

StopCondition = Literal["acknowledged", "resolved"]


class EscalationLevel(BaseModel):
    """Who to page at one level, after how long, and how often."""

    model_config = ConfigDict(frozen=True)

    channels: tuple[str, ...]
    delay: timedelta = timedelta(0)
    repeat: int = 0
    repeat_every: timedelta | None = None

    @property
    def repeat_interval(self) -> timedelta:
        """Time between repeated pages of this level (defaults to `delay`, else 5m)."""
        if self.repeat_every is not None:
            return self.repeat_every
        return self.delay if self.delay > timedelta(0) else timedelta(minutes=5)


class EscalationPolicy(BaseModel):
    """An ordered chain of levels for incidents whose labels match."""

    model_config = ConfigDict(frozen=True)

    name: str
    matchers: tuple[Matcher, ...] = ()
    levels: tuple[EscalationLevel, ...]
    stop_on: tuple[StopCondition, ...] = ("acknowledged", "resolved")


class Step(BaseModel):
    """One page of a policy: level index, round (0 = first page of the level), wait before it."""

    model_config = ConfigDict(frozen=True)

    level: int
    round: int
    wait: timedelta


def select_policy(
    policies: Sequence[EscalationPolicy], labels: dict[str, str]
) -> EscalationPolicy | None:
    """The first policy whose matchers all match (a policy without matchers matches all)."""
    for p in policies:
        if matches_all(p.matchers, labels):
            return p
    return None


def first_step(policy: EscalationPolicy) -> Step:
    """The opening page: level 0, round 0, after level 0's delay."""
    return Step(level=0, round=0, wait=policy.levels[0].delay)


def next_step(policy: EscalationPolicy, level: int, round_: int) -> Step | None:
    """The page after (level, round), or None at the end of the chain."""
    if level >= len(policy.levels):
        return None
    lvl = policy.levels[level]
    if round_ < lvl.repeat:
        return Step(level=level, round=round_ + 1, wait=lvl.repeat_interval)
    if level + 1 < len(policy.levels):
        return Step(level=level + 1, round=0, wait=policy.levels[level + 1].delay)
    return None


def stop_reason(policy_stop_on: Sequence[str], incident: Incident | None) -> str | None:
    """Why escalation of this incident must stop now, or None to carry on."""
    if incident is None or incident.state == "closed":
        return "incident is closed"
    if incident.state == "acknowledged" and "acknowledged" in policy_stop_on:
        return f"acknowledged by {incident.acknowledged_by}"
    if incident.state == "resolved" and "resolved" in policy_stop_on:
        return "incident resolved"
    return None


def routing_labels(world: World, incident: Incident) -> dict[str, str]:
    """Labels a policy is selected by: labels every alert shares, the group's, top severity."""
    shared = world.shared_labels(incident.id) or {}
    shared.update(incident.group_labels)
    if incident.severity != "none":
        shared["severity"] = incident.severity
    return shared
