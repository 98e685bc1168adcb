"""Inhibition, with the cases of Alertmanager's inhibitor tests (inhibit/inhibit_test.go):
equal labels, missing labels, an alert matching both source and target, resolution."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from domainkit import T0, mk

from daemon.config.settings import ConfigError, Settings, load_config
from daemon.domain import GroupingPolicy, ReceiveAlert, Tick, World, decide
from daemon.domain.alert_model import Alert, fingerprint
from daemon.domain.events import AlertInhibited, DomainEvent
from daemon.domain.inhibit import InhibitRule, inhibited_by
from daemon.domain.matchers import Matcher

S = timedelta(seconds=1)


def rule(src: dict[str, str], tgt: dict[str, str], equal: tuple[str, ...] = ()) -> InhibitRule:
    return InhibitRule(
        source_matchers=tuple(Matcher(name=k, value=v) for k, v in src.items()),
        target_matchers=tuple(Matcher(name=k, value=v) for k, v in tgt.items()),
        equal=equal,
    )


def alert(status: str = "firing", **labels: str) -> Alert:
    return Alert(
        fingerprint=fingerprint(labels),
        labels=labels,
        status=status,  # type: ignore[arg-type]
        starts_at=T0,
    )


def kinds(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


# TestInhibitRuleHasEqual: which source alerts satisfy a rule's `equal` labels.
HAS_EQUAL = [
    pytest.param([], (), {"a": "b"}, False, id="no source alerts at all"),
    pytest.param([{"a": "b"}], (), {"a": "c"}, True, id="no equal labels: any source will do"),
    pytest.param(
        [{"a": "b", "b": "c"}], ("a", "b"), {"a": "b", "b": "c"}, True, id="matching, unresolved"
    ),
    pytest.param(
        [{"a": "c", "b": "c"}, {"a": "c", "b": "d"}],
        ("a",),
        {"a": "b", "b": "c"},
        False,
        id="equal label does not match",
    ),
    pytest.param([{"s": "1"}], ("zone",), {"t": "1"}, True, id="equal label missing on both"),
    pytest.param(
        [{"s": "1", "zone": "a"}], ("zone",), {"t": "1"}, False, id="missing on the target only"
    ),
    pytest.param(
        [{"s": "1"}], ("zone",), {"t": "1", "zone": "a"}, False, id="missing on the source only"
    ),
    pytest.param(
        [{"s": "1", "zone": ""}], ("zone",), {"t": "1"}, True, id="empty value equals missing"
    ),
]


@pytest.mark.parametrize(("sources", "equal", "target", "inhibited"), HAS_EQUAL)
def test_has_equal(
    sources: list[dict[str, str]], equal: tuple[str, ...], target: dict[str, str], inhibited: bool
) -> None:
    # hasEqual alone: the sides are told apart by a label of their own.
    r = rule({"side": "source"}, {"side": "target"}, equal)
    got = inhibited_by(
        [r], alert(**target, side="target"), [alert(**s, side="source") for s in sources]
    )
    assert (got is not None) is inhibited


def test_resolved_sources_do_not_inhibit() -> None:
    r = rule({"a": "b"}, {"x": "y"}, ("a", "b"))
    target = alert(a="b", b="c", x="y")
    assert inhibited_by([r], target, [alert("resolved", a="b", b="c")]) is None
    assert inhibited_by([r], target, [alert("resolved", a="b", b="c"), alert(a="b", b="c")])


# TestInhibitRuleMatches: two rules; sourceAlert2 matches both sides of rule2.
RULES = [
    rule({"s1": "1"}, {"t1": "1"}, ("e",)),
    rule({"s2": "1"}, {"t2": "1"}, ("e",)),
]
SOURCES = [alert(s1="1", t1="2", e="1"), alert(s2="1", t2="1", e="1")]
MATCHES = [
    pytest.param({"t1": "1", "e": "1"}, True, id="target of rule1"),
    pytest.param({"t2": "1", "e": "1"}, True, id="target of rule2"),
    pytest.param({"t1": "1", "t3": "1", "e": "1"}, True, id="target of rule1 plus noise"),
    pytest.param({"t1": "1", "t2": "1", "e": "1"}, True, id="targets of rule1 and rule2"),
    pytest.param({"t1": "0", "e": "1"}, False, id="matches no target"),
    pytest.param(
        {"s1": "1", "t1": "1", "e": "1"},
        True,
        id="both sides of rule1; its source matches the source side only",
    ),
    pytest.param(
        {"s2": "1", "t2": "1", "e": "1"},
        False,
        id="both sides of rule2; its source matches both sides too",
    ),
    pytest.param({"t1": "1", "e": "0"}, False, id="equal label differs"),
]


@pytest.mark.parametrize(("target", "inhibited"), MATCHES)
def test_rule_matches(target: dict[str, str], inhibited: bool) -> None:
    assert (inhibited_by(RULES, alert(**target), SOURCES) is not None) is inhibited


def test_an_alert_never_inhibits_itself() -> None:
    both = alert(s1="1", t1="1", e="1")
    assert inhibited_by(RULES, both, [both]) is None


# TestInhibit, through the core: alertOne {t=1, e=f} is muted while alertTwo {s=1, e=f} fires.
POLICY = GroupingPolicy(
    group_by=("alertname", "t", "s"),
    inhibit_rules=(rule({"s": "1"}, {"t": "1"}, ("e",)),),
)


def test_target_alone_opens_an_incident() -> None:
    world = World(policy=POLICY)
    assert kinds(decide(world, ReceiveAlert(mk("One", t="1", e="f")), T0)) == [
        "IncidentOpened",
        "AlertFired",
    ]


def test_inhibited_alert_is_recorded_but_opens_nothing_and_returns_when_source_resolves() -> None:
    world = World(policy=POLICY)
    two = mk("Two", s="1", e="f")
    one = mk("One", t="1", e="f")
    decide(world, ReceiveAlert(two), T0)
    events = decide(world, ReceiveAlert(one), T0 + S)
    assert kinds(events) == ["AlertInhibited"]
    ev = events[0]
    assert isinstance(ev, AlertInhibited)
    assert ev.source_fingerprint == two.fingerprint
    assert ev.source_name == "Two"
    assert 's="1"' in ev.rule
    assert len(world.incidents) == 1  # only the source's
    st = world.alerts[one.fingerprint]
    assert st.incident_id is None
    assert st.inhibited_by == two.fingerprint
    # A repeat of the inhibited alert changes nothing.
    assert decide(world, ReceiveAlert(one), T0 + 2 * S) == []
    # The source resolves: the target is evaluated again and opens its incident.
    two_resolved = two.model_copy(update={"status": "resolved"})
    resolved = decide(world, ReceiveAlert(two_resolved), T0 + 3 * S)
    assert kinds(resolved) == [
        "AlertResolved",  # the source, in its incident
        "IncidentResolved",
        "AlertResolved",  # the inhibited episode ends
        "IncidentOpened",
        "AlertFired",
    ]
    assert world.alerts[one.fingerprint].incident_id is not None
    assert not world.inhibited_firing


def test_inhibited_alert_resolving_on_its_own_leaves_the_hot_set() -> None:
    world = World(policy=POLICY)
    two = mk("Two", s="1", e="f")
    one = mk("One", t="1", e="f")
    decide(world, ReceiveAlert(two), T0)
    decide(world, ReceiveAlert(one), T0)
    events = decide(world, ReceiveAlert(one.model_copy(update={"status": "resolved"})), T0 + S)
    assert kinds(events) == ["AlertResolved"]
    assert one.fingerprint not in world.alerts
    assert kinds(decide(world, Tick(), T0 + 2 * S)) == []


def test_source_lease_expiry_releases_the_target_on_tick() -> None:
    world = World(policy=POLICY)
    two = mk("Two", s="1", e="f", ends=T0 + 10 * S)
    decide(world, ReceiveAlert(two), T0)
    decide(world, ReceiveAlert(mk("One", t="1", e="f")), T0)
    events = decide(world, Tick(), T0 + 11 * S)
    assert kinds(events)[-2:] == ["IncidentOpened", "AlertFired"]


def test_alerts_matching_both_sides_do_not_mute_each_other() -> None:
    policy = GroupingPolicy(
        group_by=("alertname", "n"),
        inhibit_rules=(rule({"severity": "critical"}, {"severity": "critical"}),),
    )
    world = World(policy=policy)
    decide(world, ReceiveAlert(mk("A", severity="critical", n="1")), T0)
    events = decide(world, ReceiveAlert(mk("A", severity="critical", n="2")), T0)
    assert "AlertInhibited" not in kinds(events)
    assert len(world.incidents) == 2


def test_inhibited_alerts_survive_a_rebuild_from_a_checkpoint() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("Two", s="1", e="f")), T0)
    one = mk("One", t="1", e="f")
    decide(world, ReceiveAlert(one), T0)
    copy = World.model_validate({**world.model_dump(mode="json"), "policy": POLICY})
    assert list(copy.inhibited_firing) == [one.fingerprint]
    # The source index is rebuilt too: a new target is still muted by the same source.
    events = decide(copy, ReceiveAlert(mk("Three", t="1", e="f")), T0 + S)
    assert kinds(events) == ["AlertInhibited"]


def test_sources_are_found_by_their_equal_labels_among_many() -> None:
    policy = POLICY.model_copy(
        update={"inhibit_rules": (rule({"s": "1"}, {"t": "1"}, ("instance",)),)}
    )
    world = World(policy=policy)
    for i in range(2000):
        decide(world, ReceiveAlert(mk("Down", s="1", instance=f"h{i}")), T0)
    events = decide(world, ReceiveAlert(mk("Svc", t="1", instance="h1234")), T0 + S)
    assert kinds(events) == ["AlertInhibited"]
    assert events[0].source_fingerprint == mk("Down", s="1", instance="h1234").fingerprint  # type: ignore[attr-defined]
    assert kinds(decide(world, ReceiveAlert(mk("Svc", t="1", instance="h9999")), T0 + S)) == [
        "IncidentOpened",
        "AlertFired",
    ]
    # A source that resolved no longer mutes a new target.
    gone = mk("Down", s="1", instance="h7", status="resolved")
    decide(world, ReceiveAlert(gone), T0 + 2 * S)
    assert "AlertInhibited" not in kinds(
        decide(world, ReceiveAlert(mk("Svc", t="1", instance="h7")), T0 + 3 * S)
    )


ALERTMANAGER_YAML = """
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers:
      - severity =~ "warning|info"
    equal: [cluster, instance]
  - source_match: {alertname: NodeDown}
    target_match_re: {alertname: ".+"}
    equal: [instance]
"""


def test_alertmanagers_own_inhibit_rules_paste_into_the_config() -> None:
    s = Settings(**yaml.safe_load(ALERTMANAGER_YAML))
    rules = s.policy().inhibit_rules
    assert rules[0].source_matchers == (Matcher(name="severity", value="critical"),)
    assert rules[0].target_matchers == (Matcher(name="severity", op="=~", value="warning|info"),)
    assert rules[0].equal == ("cluster", "instance")
    assert rules[1].source_matchers == (Matcher(name="alertname", value="NodeDown"),)
    assert rules[1].target_matchers == (Matcher(name="alertname", op="=~", value=".+"),)


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("[{source_matchers: ['a=b']}]", "needs target_matchers"),
        ("[{target_matchers: ['a=b']}]", "needs source_matchers"),
        ("[{source_matchers: ['a=~('], target_matchers: ['b=c']}]", "invalid regular expression"),
        ("[{source_matchers: ['a=b'], target_matchers: ['b=c'], equal: ['no-dash']}]", "label"),
        ("[{source_matchers: ['a=b'], target_matchers: ['b=c'], equals: [x]}]", "unknown"),
    ],
)
def test_bad_inhibit_rules_are_refused_with_the_reason(
    tmp_path: Path, rules: str, problem: str
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(f"inhibit_rules: {rules}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert any(problem in p and p.startswith("inhibit_rules[0]") for p in e.value.problems), (
        e.value.problems
    )
