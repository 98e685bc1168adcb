"""Action policy, outside the model: modes, risk tiers, rate limits, blast radius, freezes.

`evaluate` takes a proposed action (what it acts on, how risky), the rules, the recorded
dispatches and `now`, and returns a verdict — execute, ask for approval, refuse, or only
record (observe mode) — with one self-describing reason per rule that spoke, e.g.
"rate limit: 3 restarts of nginx.service in the last 1h (at most 3)". Pure: no clock, no I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.domain.durations import format_duration
from daemon.domain.matchers import Matcher, matches_all

Mode = Literal["observe", "review", "autonomous"]
Risk = Literal["low", "medium", "high"]
Effect = Literal["block", "approve"]
Outcome = Literal["execute", "approve", "refuse", "observe"]
WILDCARD_CHARS = "*?["
WILDCARD_WORDS = {"all", "any", ".*", ".+", "--all"}
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunbookPolicy(_Rule):
    """A runbook's own mode and auto-run risk tiers (unset: the global ones apply)."""

    mode: Mode | None = None
    auto_risks: tuple[Risk, ...] | None = None


class LabelMode(_Rule):
    """A mode for incidents and hosts whose labels match, e.g. `env="prod"` -> review."""

    matchers: tuple[Matcher, ...]
    mode: Mode


# The stricter of two modes wins where both apply.
_STRICTNESS: dict[str, int] = {"observe": 0, "review": 1, "autonomous": 2}


class RateLimit(_Rule):
    """At most `max` dispatches of matching actions per target within a sliding `per`."""

    action: str = "*"  # action id glob, e.g. restart_*
    kind: str = "*"  # executor kind glob, e.g. systemd
    max: int = Field(ge=0)
    per: timedelta
    # "target": counted per thing acted on and host; "host": every matching run on the host;
    # "fleet": how many different hosts matching runs touched (a blast radius across hosts).
    scope: Literal["target", "host", "fleet"] = "target"

    def applies(self, action_id: str, kind: str) -> bool:
        """Whether this limit counts actions with this id and kind."""
        return fnmatch.fnmatchcase(action_id, self.action) and fnmatch.fnmatchcase(
            kind, self.kind
        )


class Window(_Rule):
    """A maintenance window or change freeze: a time span plus label matchers, and its effect.

    Either absolute (`starts_at`..`ends_at`) or weekly (`days` with `start`..`end` in
    `timezone`; an end before the start runs past midnight).
    """

    name: str
    effect: Effect = "block"
    matchers: tuple[Matcher, ...] = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    days: tuple[int, ...] = ()  # 0 = Monday
    start: time | None = None
    end: time | None = None
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_shape(self) -> Window:
        absolute = self.starts_at is not None or self.ends_at is not None
        weekly = bool(self.days) or self.start is not None or self.end is not None
        if absolute == weekly:
            raise ValueError(
                "give either starts_at and ends_at, or days with start and end (weekly)"
            )
        if absolute and (self.starts_at is None or self.ends_at is None):
            raise ValueError("an absolute window needs both starts_at and ends_at")
        if absolute and self.ends_at <= self.starts_at:  # type: ignore[operator]
            raise ValueError("ends_at must be after starts_at")
        if weekly and (self.start is None or self.end is None or not self.days):
            raise ValueError("a weekly window needs days, start and end")
        if any(d < 0 or d > 6 for d in self.days):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        ZoneInfo(self.timezone)
        return self

    def active(self, now: datetime) -> bool:
        """Whether `now` falls inside the window."""
        if self.starts_at is not None and self.ends_at is not None:
            return self.starts_at <= now < self.ends_at
        assert self.start is not None
        assert self.end is not None
        local = now.astimezone(ZoneInfo(self.timezone))
        t, day = local.time().replace(tzinfo=None), local.weekday()
        if self.start <= self.end:
            return day in self.days and self.start <= t < self.end
        # Past midnight: the evening of a listed day, or the early hours after one.
        return (day in self.days and t >= self.start) or (
            (day - 1) % 7 in self.days and t < self.end
        )

    def describe(self) -> str:
        """When the window is, for reasons and listings."""
        if self.starts_at is not None and self.ends_at is not None:
            return f"until {self.ends_at.isoformat()}"
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start}-{self.end} {self.timezone}"


class PolicyRules(_Rule):
    """Everything policy decides by; built from the `actions:` config section."""

    mode: Mode = "review"
    auto_risks: tuple[Risk, ...] = ("low",)
    runbooks: dict[str, RunbookPolicy] = {}
    approvals_required: dict[Risk, int] = {}
    approval_timeout: timedelta = timedelta(minutes=30)
    reminder_before: timedelta = timedelta(minutes=10)
    rate_limits: tuple[RateLimit, ...] = ()
    max_targets: int = Field(default=10, ge=1)
    windows: tuple[Window, ...] = ()
    # Modes by label (host labels from the inventory included); the strictest match wins.
    label_modes: tuple[LabelMode, ...] = ()

    def mode_for(self, runbook_id: str, labels: dict[str, str] | None = None) -> Mode:
        """The mode in force for a runbook, made stricter by any label mode that matches."""
        own = self.runbooks.get(runbook_id)
        mode = own.mode if own is not None and own.mode is not None else self.mode
        for lm in self.label_modes:
            if labels is not None and matches_all(lm.matchers, labels):
                mode = min(mode, lm.mode, key=_STRICTNESS.__getitem__)
        return mode

    def auto_risks_for(self, runbook_id: str) -> tuple[Risk, ...]:
        """Risk tiers that run without approval in autonomous mode, for a runbook."""
        own = self.runbooks.get(runbook_id)
        if own is not None and own.auto_risks is not None:
            return own.auto_risks
        return self.auto_risks

    def approvals_for(self, risk: Risk) -> int:
        """How many different people must approve an action of this risk."""
        return max(1, self.approvals_required.get(risk, 1))


class Dispatch(_Rule):
    """One recorded dispatch, as rate limits count them."""

    action_id: str
    kind: str
    target: str
    at: datetime
    host: str = ""


class Proposal(_Rule):
    """What policy needs to know about a proposed action."""

    action_id: str
    kind: str
    risk: Risk
    runbook_id: str
    targets: tuple[str, ...]
    labels: dict[str, str] = {}
    # The operation in words, for reasons ("restart" -> "3 restarts of nginx.service").
    verb: str = ""
    # The host it runs on ("" when it names its own URL, or for plans made before targets).
    host: str = ""


class Verdict(_Rule):
    """Policy's answer: what happens to the action, why, and how many approvals it needs."""

    outcome: Outcome
    mode: Mode
    reasons: tuple[str, ...]
    approvals_required: int = 0


def blast_radius(p: Proposal, rules: PolicyRules) -> list[str]:
    """Reasons the action's targets are unacceptable: none, a wildcard, or too many."""
    if not p.targets or not any(t.strip() for t in p.targets):
        return [f"blast radius: {p.action_id} names no target; an empty target is refused"]
    out = []
    for t in p.targets:
        if not t.strip():
            out.append(f"blast radius: {p.action_id} has an empty target")
        elif any(c in t for c in WILDCARD_CHARS) or t.strip().lower() in WILDCARD_WORDS:
            out.append(f"blast radius: target {t!r} is a wildcard; name each target")
    if len(p.targets) > rules.max_targets:
        out.append(
            f"blast radius: {len(p.targets)} targets, more than the {rules.max_targets} allowed"
        )
    return out


def _noun(p: Proposal, n: int) -> str:
    if p.verb:
        return f"{p.verb}{'' if n == 1 else 's'}"
    return f"run{'' if n == 1 else 's'} of {p.action_id}"


def rate_limited(
    p: Proposal, rules: PolicyRules, history: Sequence[Dispatch], now: datetime
) -> list[str]:
    """Reasons a rate limit forbids another dispatch now (per target and host, or per host)."""
    out = []
    on = f" on {p.host}" if p.host else ""
    for limit in rules.rate_limits:
        if not limit.applies(p.action_id, p.kind):
            continue
        since = now - limit.per
        if limit.scope == "fleet":
            hosts = {
                d.host
                for d in history
                if d.host and d.at > since and limit.applies(d.action_id, d.kind)
            }
            if p.host not in hosts and len(hosts) >= limit.max:
                out.append(
                    f"blast radius: {_noun(p, 2)} already touched {len(hosts)} hosts in the last "
                    f"{format_duration(limit.per)} (at most {limit.max}); {p.host or 'this host'} "
                    "would be one more"
                )
            continue
        if limit.scope == "host":
            n = sum(
                1
                for d in history
                if d.host == p.host and d.at > since and limit.applies(d.action_id, d.kind)
            )
            if n >= limit.max:
                out.append(
                    f"rate limit: {n} {_noun(p, n)}{on or ' on this host'} in the last "
                    f"{format_duration(limit.per)} (at most {limit.max} per host)"
                )
            continue
        for target in p.targets:
            n = sum(
                1
                for d in history
                if d.target == target
                and d.host == p.host
                and d.at > since
                and limit.applies(d.action_id, d.kind)
            )
            if n >= limit.max:
                out.append(
                    f"rate limit: {n} {_noun(p, n)} of {target}{on} in the last "
                    f"{format_duration(limit.per)} (at most {limit.max})"
                )
    return out


def windows_in_force(
    p: Proposal, rules: PolicyRules, now: datetime, effect: Effect
) -> list[str]:
    """Reasons from active windows with this effect whose matchers match the incident."""
    out = []
    for w in rules.windows:
        if w.effect != effect or not w.active(now) or not matches_all(w.matchers, p.labels):
            continue
        scope = " ".join(str(m) for m in w.matchers) or "every incident"
        if effect == "block":
            out.append(f"change freeze {w.name!r} ({w.describe()}) blocks actions on {scope}")
        else:
            out.append(
                f"maintenance window {w.name!r} ({w.describe()}) on {scope}: approval required"
            )
    return out


def blocking(
    p: Proposal, rules: PolicyRules, history: Sequence[Dispatch], now: datetime
) -> list[str]:
    """Every reason the action may not run now, whoever approved it (checked again at dispatch)."""
    return (
        blast_radius(p, rules)
        + windows_in_force(p, rules, now, "block")
        + rate_limited(p, rules, history, now)
    )


def evaluate(
    p: Proposal, rules: PolicyRules, history: Sequence[Dispatch], now: datetime
) -> Verdict:
    """Decide what happens to a proposed action."""
    mode = rules.mode_for(p.runbook_id, p.labels)
    radius = blast_radius(p, rules)
    if radius:
        return Verdict(outcome="refuse", mode=mode, reasons=tuple(radius))
    if mode == "observe":
        return Verdict(
            outcome="observe",
            mode=mode,
            reasons=("mode observe: recorded with exactly what would run; never executed",),
        )
    blocks = blocking(p, rules, history, now)
    if blocks:
        return Verdict(outcome="refuse", mode=mode, reasons=tuple(blocks))
    forced = windows_in_force(p, rules, now, "approve")
    needs = rules.approvals_for(p.risk)
    people = f"{needs} approvals from different people" if needs > 1 else "an approval"
    if mode == "review":
        reasons = (f"mode review: every action needs {people}", *forced)
        return Verdict(outcome="approve", mode=mode, reasons=reasons, approvals_required=needs)
    if p.risk in rules.auto_risks_for(p.runbook_id) and not forced:
        return Verdict(
            outcome="execute",
            mode=mode,
            reasons=(f"mode autonomous: {p.risk} risk runs without approval",),
        )
    why = f"mode autonomous: {p.risk} risk needs {people}"
    if p.risk in rules.auto_risks_for(p.runbook_id):
        why = f"mode autonomous: {p.risk} risk would run alone, but a window asks for {people}"
    return Verdict(
        outcome="approve", mode=mode, reasons=(why, *forced), approvals_required=needs
    )
