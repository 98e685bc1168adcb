"""`inhibit_rules:` in Alertmanager's own format, and the `situations:` section (correlation).

An operator can paste the `inhibit_rules` of an alertmanager.yml: `source_matchers`,
`target_matchers` (matcher strings such as `severity="critical"`), `equal`, and the older
`source_match` / `source_match_re` / `target_match` / `target_match_re` maps.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from daemon.config.types import Duration, Section
from daemon.domain.inhibit import InhibitRule
from daemon.domain.matchers import Matcher
from daemon.domain.situation_model import Correlation

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _matchers(items: list[str]) -> list[Matcher]:
    out = []
    for text in items:
        # Alertmanager accepts `{a="b"}`-style braces around one matcher too.
        out.append(Matcher.parse(text.strip().removeprefix("{").removesuffix("}")))
    return out


class InhibitRuleConfig(Section):
    """One inhibit rule, as in alertmanager.yml."""

    source_matchers: list[str] = []
    target_matchers: list[str] = []
    source_match: dict[str, str] = {}
    source_match_re: dict[str, str] = {}
    target_match: dict[str, str] = {}
    target_match_re: dict[str, str] = {}
    equal: list[str] = []

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        _matchers(v)  # raises ValueError with the reason
        return v

    @field_validator("equal")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not _LABEL.match(x)]
        if bad:
            raise ValueError(f"not valid label names: {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _both_sides(self) -> InhibitRuleConfig:
        rule = self.rule()
        if not rule.target_matchers:
            raise ValueError(
                "an inhibit rule needs target_matchers (one with none would mute every alert)"
            )
        if not rule.source_matchers:
            raise ValueError("an inhibit rule needs source_matchers")
        return self

    def rule(self) -> InhibitRule:
        """The pure domain's rule."""

        def side(matchers: list[str], eq: dict[str, str], rx: dict[str, str]) -> list[Matcher]:
            return [
                *_matchers(matchers),
                *(Matcher(name=k, op="=", value=v) for k, v in eq.items()),
                *(Matcher(name=k, op="=~", value=v) for k, v in rx.items()),
            ]

        return InhibitRule(
            source_matchers=tuple(
                side(self.source_matchers, self.source_match, self.source_match_re)
            ),
            target_matchers=tuple(
                side(self.target_matchers, self.target_match, self.target_match_re)
            ),
            equal=tuple(self.equal),
        )


class SituationsConfig(Section):
    """How incidents are correlated into situations, and how their investigations share work."""

    # Off by default: every incident stands alone, as before situations existed.
    correlate: bool = False
    window: Duration = timedelta(minutes=5)
    # Labels whose equal values link incidents, besides the target host (e.g. cluster, service).
    keys: list[str] = []
    by_host: bool = True
    # Steps a member incident's own investigation may take (the lead's runbook budget is
    # untouched); 0 means members start no investigation and the lead covers them.
    member_steps: int = Field(default=0, ge=0)
    # How long an approved action waits for a host another action is running or verifying
    # on, before it is cancelled and handed to a person.
    lease_wait: Duration = timedelta(minutes=10)

    @field_validator("keys", mode="before")
    @classmethod
    def _label_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            bad = [x for x in v if not isinstance(x, str) or not _LABEL.match(x)]
            if bad:
                raise ValueError(f"not valid label names: {', '.join(map(str, bad))}")
        return v

    def correlation(self) -> Correlation:
        """The pure domain's view of these settings."""
        return Correlation(
            enabled=self.correlate,
            window=self.window,
            keys=tuple(self.keys),
            by_host=self.by_host,
            member_steps=self.member_steps,
            lease_wait=self.lease_wait,
        )
