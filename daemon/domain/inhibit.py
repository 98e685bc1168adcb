"""Inhibition as Alertmanager does it: a firing source alert mutes matching target alerts.

A rule names source matchers, target matchers and `equal` labels. An alert matching the
target matchers is inhibited while some *other* firing alert matches the source matchers
and has the same value for every `equal` label (a label missing on both sides counts as
equal: both are the empty string). As in Alertmanager's inhibitor, when the target alert
also matches the source matchers, source alerts that match the target matchers too are
not considered, so two alerts matching both sides never mute each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from daemon.domain.alert_model import Alert
from daemon.domain.matchers import Matcher, matches_all


class InhibitRule(BaseModel):
    """One `inhibit_rules` entry: source matchers, target matchers, labels that must agree."""

    model_config = ConfigDict(frozen=True)

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def describe(self) -> str:
        """The rule as a person reads it: `{source matchers} inhibits {target matchers}`."""
        src = ", ".join(str(m) for m in self.source_matchers)
        tgt = ", ".join(str(m) for m in self.target_matchers)
        eq = f" equal ({', '.join(self.equal)})" if self.equal else ""
        return f"{{{src}}} inhibits {{{tgt}}}{eq}"

    def has_equal(self, a: Mapping[str, str], b: Mapping[str, str]) -> bool:
        """Whether both label sets agree on every `equal` label (missing is the empty string)."""
        return all(a.get(n, "") == b.get(n, "") for n in self.equal)


def inhibiting_source(rule: InhibitRule, alert: Alert, candidates: Iterable[Alert]) -> Alert | None:
    """The candidate that inhibits `alert` under `rule`, or None (the rule's target side
    must already match `alert`). Resolved candidates and the alert itself never count."""
    two_sided = matches_all(rule.source_matchers, alert.labels)
    for src in candidates:
        if src.fingerprint == alert.fingerprint or src.status != "firing":
            continue
        if not matches_all(rule.source_matchers, src.labels):
            continue
        if two_sided and matches_all(rule.target_matchers, src.labels):
            continue
        if rule.has_equal(src.labels, alert.labels):
            return src
    return None


def inhibited_by(
    rules: Iterable[InhibitRule], alert: Alert, firing: Iterable[Alert]
) -> tuple[Alert, InhibitRule] | None:
    """The firing alert (and its rule) that inhibits `alert`, or None if nothing does."""
    candidates = list(firing)
    for rule in rules:
        if matches_all(rule.target_matchers, alert.labels):
            src = inhibiting_source(rule, alert, candidates)
            if src is not None:
                return src, rule
    return None


def source_key(rule_index: int, rule: InhibitRule, labels: Mapping[str, str]) -> tuple[object, ...]:
    """Where a source alert is filed in the world's index: its rule and its `equal` values.

    A target looks only under its own key, so finding its source does not walk every
    firing alert (a storm can hold thousands).
    """
    return (rule_index, *(labels.get(n, "") for n in rule.equal))
