"""Rules over metric streams: pure tables with an injected clock, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from daemon.domain import Rejected, Tick, World, decide, evolve
from daemon.domain.events import AlertFired, AlertResolved, DomainEvent, IncidentOpened
from daemon.domain.matchers import Matcher
from daemon.domain.rule_model import (
    ConfigureRules,
    MetricRule,
    ObserveQueryResult,
    ObserveSamples,
    QuerySeries,
    RuleFiring,
    RulePending,
    RulePendingCleared,
    RuleResolved,
    RulesConfigured,
    RulesResumed,
    Sample,
    SeriesForgotten,
    SeriesSeen,
    SeriesState,
    absence_due,
    evaluate,
    expand,
    seen_due,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ID = __import__("uuid").UUID(int=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def hot(**kw: object) -> MetricRule:
    base: dict[str, object] = {
        "name": "HighTemp",
        "alert": "HighTemp",
        "kind": "threshold",
        "metric": "temperature",
        "op": ">",
        "threshold": 80.0,
    }
    base.update(kw)
    return MetricRule.model_validate(base)


def state(phase: str, since: float | None = None, last_seen: float | None = None) -> SeriesState:
    return SeriesState(
        rule="r",
        labels={},
        stream_id=ID,
        version=1,
        phase=phase,  # type: ignore[arg-type]
        active_since=at(since) if since is not None else None,
        last_seen=at(last_seen) if last_seen is not None else None,
    )


# --- evaluate: one observation, one series ----------------------------------------------

EVALUATE = [
    # (rule kwargs, phase before, active since, value, time, expected phase or None)
    ({}, None, None, 70.0, 0, None),
    ({}, None, None, 81.0, 0, "firing"),
    ({}, "firing", 0, 90.0, 10, None),
    ({}, "firing", 0, 80.0, 10, "inactive"),
    ({"for_duration": timedelta(minutes=2)}, None, None, 81.0, 0, "pending"),
    ({"for_duration": timedelta(minutes=2)}, "pending", 0, 85.0, 60, None),
    ({"for_duration": timedelta(minutes=2)}, "pending", 0, 85.0, 120, "firing"),
    ({"for_duration": timedelta(minutes=2)}, "pending", 0, 79.0, 60, "inactive"),
    ({"for_duration": timedelta(minutes=2)}, "pending", 0, 85.0, -5, None),
    # hysteresis: fires above 80, stays firing until it drops to 75 or below
    ({"clear": 75.0}, "firing", 0, 78.0, 10, None),
    ({"clear": 75.0}, "firing", 0, 75.0, 10, "inactive"),
    ({"clear": 75.0}, None, None, 78.0, 10, None),
    # other comparisons
    ({"op": "<", "threshold": 10.0, "clear": 12.0}, None, None, 9.0, 0, "firing"),
    ({"op": "<", "threshold": 10.0, "clear": 12.0}, "firing", 0, 11.0, 5, None),
    ({"op": "<", "threshold": 10.0, "clear": 12.0}, "firing", 0, 12.5, 5, "inactive"),
    ({"op": "==", "threshold": 0.0}, None, None, 0.0, 0, "firing"),
    ({"op": "!=", "threshold": 1.0}, None, None, 1.0, 0, None),
    ({"op": ">=", "threshold": 5.0}, None, None, 5.0, 0, "firing"),
    ({"op": "<=", "threshold": 5.0}, None, None, 5.1, 0, None),
]


@pytest.mark.parametrize(("kw", "phase", "since", "value", "t", "expected"), EVALUATE)
def test_evaluate_threshold(
    kw: dict[str, object],
    phase: str | None,
    since: float | None,
    value: float,
    t: float,
    expected: str | None,
) -> None:
    rule = hot(**kw)
    st = state(phase, since) if phase else None
    tr = evaluate(rule, st, value, at(t))
    assert (tr.to if tr else None) == expected
    if tr is not None and tr.to == "firing" and phase == "pending":
        assert tr.active_since == at(since or 0), "firing keeps the time the condition began"


@pytest.mark.parametrize(
    ("phase", "present", "t", "expected"),
    [
        (None, True, 0, "pending"),
        ("pending", True, 30, None),
        ("pending", True, 60, "firing"),
        ("pending", False, 30, "inactive"),
        ("firing", True, 90, None),
        ("firing", False, 90, "inactive"),
        (None, False, 0, None),
    ],
)
def test_evaluate_query_presence(
    phase: str | None, present: bool, t: float, expected: str | None
) -> None:
    rule = MetricRule(
        name="q", alert="Q", kind="query", expr="up == 0", for_duration=timedelta(minutes=1)
    )
    st = state(phase, 0) if phase else None
    tr = evaluate(rule, st, 1.0 if present else None, at(t), present=present)
    assert (tr.to if tr else None) == expected


@pytest.mark.parametrize(
    ("last_seen", "now", "resumed", "due"),
    [
        (0, 119, None, False),
        (0, 120, None, False),  # absent_for alone is not enough: last-seen is coarse
        (0, 179, None, False),
        (0, 180, None, True),  # absent_for * 1.5 after the recorded last-seen
        (0, 200, 100, False),  # the daemon was down until 100: count from there
        (0, 280, 100, True),
    ],
)
def test_absence_due_never_early(
    last_seen: float, now: float, resumed: float | None, due: bool
) -> None:
    rule = MetricRule(
        name="quiet", alert="Quiet", kind="absence", metric="m", absent_for=timedelta(minutes=2)
    )
    st = state("inactive", last_seen=last_seen)
    assert absence_due(rule, st, at(now), at(resumed) if resumed is not None else None) is due


@pytest.mark.parametrize(
    ("last_seen", "now", "due"),
    [(None, 0, True), (0, 59, False), (0, 60, True), (0, 10_000, True)],
)
def test_seen_recorded_at_most_once_per_half_window(
    last_seen: float | None, now: float, due: bool
) -> None:
    rule = MetricRule(
        name="quiet", alert="Quiet", kind="absence", metric="m", absent_for=timedelta(minutes=2)
    )
    st = state("inactive", last_seen=last_seen) if last_seen is not None else None
    assert seen_due(rule, st, at(now)) is due


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"kind": "threshold", "metric": ""}, "needs the metric"),
        ({"kind": "absence", "absent_for": None}, "absent_for greater than zero"),
        ({"kind": "query", "expr": ""}, "needs expr"),
        ({"op": ">", "threshold": 80.0, "clear": 90.0}, "must not be above threshold"),
        ({"op": "<", "threshold": 10.0, "clear": 5.0}, "must not be below threshold"),
        ({"op": "==", "threshold": 1.0, "clear": 1.0}, "ordering comparison"),
    ],
)
def test_invalid_rules_say_why(kw: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        hot(**kw)


def test_annotation_templates() -> None:
    text = "{{ $labels.device }} at {{$value}} ({{ $labels.missing }})"
    assert expand(text, {"device": "d1"}, 81.5) == "d1 at 81.5 ()"


# --- decide: events, incidents, rebuild ---------------------------------------------------


class Run:
    """A world, the events recorded so far, and an injected clock."""

    def __init__(self, *rules: MetricRule) -> None:
        self.world = World()
        self.log: list[DomainEvent] = []
        self.now = T0
        if rules:
            self.do(ConfigureRules(rules))

    def do(self, cmd: object) -> list[DomainEvent]:
        events = decide(self.world, cmd, self.now)  # type: ignore[arg-type]
        self.log.extend(events)
        return events

    def sample(self, value: float, t: float, **labels: str) -> list[DomainEvent]:
        self.now = at(t)
        s = Sample("temperature", {"device": "d1", **labels}, value, self.now)
        return self.do(ObserveSamples((s,)))

    def tick(self, t: float) -> list[DomainEvent]:
        self.now = at(t)
        return self.do(Tick())

    def rebuilt(self) -> World:
        w = World()
        for e in self.log:
            evolve(e, w)
        return w


def kinds(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_threshold_with_for_and_hysteresis_opens_and_resolves_an_incident() -> None:
    rule = hot(
        for_duration=timedelta(minutes=2),
        clear=75.0,
        labels={"severity": "warning"},
        annotations={"summary": "{{ $labels.device }} is at {{ $value }}"},
    )
    run = Run(rule)
    assert kinds(run.sample(70, 0)) == []
    assert kinds(run.sample(85, 10)) == ["RulePending"]
    assert kinds(run.sample(86, 60)) == [], "repeats while pending change nothing"
    fired = run.sample(90, 130)
    assert kinds(fired) == ["RuleFiring", "IncidentOpened", "AlertFired"]
    alert = next(e for e in fired if isinstance(e, AlertFired)).alert
    assert alert.labels == {"alertname": "HighTemp", "device": "d1", "severity": "warning"}
    assert alert.annotations["summary"] == "d1 is at 90"
    assert alert.starts_at == at(10), "starts when the condition began, as Prometheus' activeAt"
    assert alert.ends_at is None, "no lease: the rule resolves it"
    assert kinds(run.sample(78, 140)) == [], "between clear and threshold: still firing"
    assert kinds(run.sample(74, 150)) == ["RuleResolved", "AlertResolved", "IncidentResolved"]
    assert run.world.rulebook.series == {}, "inactive threshold series leave the state"
    assert run.rebuilt().rulebook == run.world.rulebook


def test_pending_cleared_before_for_elapses() -> None:
    run = Run(hot(for_duration=timedelta(minutes=5)))
    assert kinds(run.sample(90, 0)) == ["RulePending"]
    assert kinds(run.sample(60, 30)) == ["RulePendingCleared"]
    assert kinds(run.sample(90, 40)) == ["RulePending"], "a new episode: a new stream"
    streams = {e.originator_id for e in run.log if isinstance(e, RulePending)}
    assert len(streams) == 2
    assert run.rebuilt().rulebook == run.world.rulebook


def test_sample_time_in_the_future_cannot_skip_for() -> None:
    run = Run(hot(for_duration=timedelta(minutes=2)))
    run.sample(90, 0)
    run.now = at(10)
    ahead = Sample("temperature", {"device": "d1"}, 90, at(500))
    assert kinds(run.do(ObserveSamples((ahead,)))) == []


def test_series_are_separate_and_matchers_select() -> None:
    rule = hot(matchers=(Matcher.parse('site=~"lab.*"'),))
    run = Run(rule)
    assert kinds(run.sample(90, 0, site="office")) == []
    assert kinds(run.sample(90, 0, site="lab1")) == ["RuleFiring", "IncidentOpened", "AlertFired"]
    assert kinds(run.sample(90, 1, site="lab2")) == ["RuleFiring", "AlertFired"]
    assert len(run.world.rulebook.series["HighTemp"]) == 2


def test_absence_fires_on_tick_and_resolves_when_the_series_reports() -> None:
    rule = MetricRule(
        name="Silent",
        alert="DeviceSilent",
        kind="absence",
        metric="temperature",
        absent_for=timedelta(minutes=2),
        labels={"severity": "critical"},
    )
    run = Run(rule)
    assert kinds(run.sample(20, 0)) == ["SeriesSeen"]
    assert kinds(run.sample(20, 30)) == [], "last-seen is recorded at most once per absent_for/2"
    assert kinds(run.sample(20, 60)) == ["SeriesSeen"]
    assert kinds(run.tick(200)) == []
    fired = run.tick(240)
    assert kinds(fired) == ["RuleFiring", "IncidentOpened", "AlertFired"]
    alert = next(e for e in fired if isinstance(e, AlertFired)).alert
    assert alert.labels == {"alertname": "DeviceSilent", "device": "d1", "severity": "critical"}
    assert kinds(run.tick(300)) == [], "fires once"
    back = run.sample(21, 400)
    assert kinds(back) == ["RuleResolved", "AlertResolved", "IncidentResolved", "SeriesSeen"]
    assert run.rebuilt().rulebook == run.world.rulebook


def test_restart_does_not_count_downtime_as_absence() -> None:
    rule = MetricRule(
        name="Silent",
        alert="DeviceSilent",
        kind="absence",
        metric="temperature",
        absent_for=timedelta(minutes=2),
    )
    run = Run(rule)
    run.sample(20, 0)
    # The daemon was down from 10s to 1000s; at start it resumes evaluation.
    run.now = at(1000)
    assert kinds(run.do(ConfigureRules((rule,), resuming=True))) == ["RulesResumed"]
    assert kinds(run.tick(1001)) == []
    assert kinds(run.tick(1000 + 180)) == ["RuleFiring", "IncidentOpened", "AlertFired"]
    assert run.rebuilt().rulebook == run.world.rulebook


def test_query_rule_fires_per_series_and_resolves_when_a_series_leaves() -> None:
    rule = MetricRule(
        name="Down",
        alert="TargetDown",
        kind="query",
        expr="up == 0",
        for_duration=timedelta(seconds=30),
        labels={"severity": "page"},
    )
    run = Run(rule)

    def result(t: float, *instances: str) -> list[DomainEvent]:
        run.now = at(t)
        series = tuple(QuerySeries({"instance": i, "job": "x"}, 0.0) for i in instances)
        return run.do(ObserveQueryResult("Down", series))

    assert kinds(result(0, "a", "b")) == ["RulePending", "RulePending"]
    assert kinds(result(15, "a", "b")) == []
    assert kinds(result(30, "a")) == [
        "RuleFiring",
        "IncidentOpened",
        "AlertFired",
        "RulePendingCleared",
    ]
    assert kinds(result(45, "a")) == []
    assert kinds(result(60)) == ["RuleResolved", "AlertResolved", "IncidentResolved"]
    with pytest.raises(Rejected, match="no query rule 'nope'"):
        run.do(ObserveQueryResult("nope", ()))
    assert run.rebuilt().rulebook == run.world.rulebook


def test_configuration_is_recorded_only_when_it_changes() -> None:
    rule = hot()
    run = Run()
    assert kinds(run.do(ConfigureRules((rule,)))) == ["RulesConfigured"]
    assert kinds(run.do(ConfigureRules((rule,)))) == []
    changed = run.do(ConfigureRules((hot(threshold=90.0),)))
    assert kinds(changed) == ["RulesConfigured"]
    assert isinstance(changed[0], RulesConfigured)
    assert changed[0].changed == ("HighTemp",)
    with pytest.raises(Rejected, match="repeated: HighTemp"):
        run.do(ConfigureRules((rule, rule)))


def test_removing_a_rule_resolves_what_it_fired_and_forgets_its_series() -> None:
    silent = MetricRule(
        name="Silent",
        alert="DeviceSilent",
        kind="absence",
        metric="temperature",
        absent_for=timedelta(minutes=2),
    )
    run = Run(hot(), silent)
    run.sample(90, 0)
    events = run.do(ConfigureRules(()))
    assert kinds(events) == [
        "RulesConfigured",
        "RuleResolved",
        "AlertResolved",
        "IncidentResolved",
        "SeriesForgotten",
    ]
    resolved = next(e for e in events if isinstance(e, RuleResolved))
    assert resolved.reason == "rule removed from the configuration"
    assert run.world.rulebook.series == {}
    assert not any(a.firing for a in run.world.alerts.values())
    assert run.rebuilt().rulebook == run.world.rulebook


def test_event_types_round_trip_through_json() -> None:
    """Rule events are stored as JSON; NaN values are never recorded (they are not JSON)."""
    run = Run(hot(for_duration=timedelta(seconds=10)))
    run.sample(float("nan"), 0)
    run.sample(90, 1)
    run.sample(90, 20)
    run.sample(10, 30)
    assert {type(e) for e in run.log} >= {RulesConfigured, RulePending, RuleFiring, RuleResolved}
    for e in run.log:
        assert type(e).model_validate_json(e.model_dump_json()) == e
    assert not any(
        isinstance(e, SeriesSeen | SeriesForgotten | RulesResumed | RulePendingCleared)
        for e in run.log
    )
    assert any(isinstance(e, IncidentOpened) for e in run.log)
    assert any(isinstance(e, AlertResolved) for e in run.log)


def test_rule_state_survives_a_checkpoint() -> None:
    """Checkpoints serialize the World as JSON; the rulebook must come back identical."""
    silent = MetricRule(
        name="Silent",
        alert="DeviceSilent",
        kind="absence",
        metric="temperature",
        absent_for=timedelta(minutes=2),
        matchers=(Matcher.parse('device=~"d.*"'),),
    )
    run = Run(hot(for_duration=timedelta(seconds=30), clear=70.0), silent)
    run.sample(90, 0)
    run.sample(91, 1, site="x")
    run.sample(92, 40, site="x")
    restored = World.model_validate_json(run.world.model_dump_json())
    assert restored.rulebook == run.world.rulebook
    assert {s.phase for s in restored.rulebook.series["HighTemp"].values()} == {"pending", "firing"}
