"""`decide` and `evolve` for metric rules: samples and query results in, phase changes out.

Only changes of phase are stored. A firing series raises its alert through the same
decision HTTP intake uses (`ReceiveAlert`), so incidents open, group and resolve exactly as
for any other alert. Absence is checked on every Tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from daemon.domain.alert_model import Alert
from daemon.domain.commands import ReceiveAlert, Rejected
from daemon.domain.decide import TICK_HOOKS, _decide, decide
from daemon.domain.decide import _Out as _CoreOut
from daemon.domain.durations import format_duration
from daemon.domain.events import DomainEvent, stamp
from daemon.domain.evolve import evolve
from daemon.domain.rule_model import (
    RULEBOOK_ID,
    ConfigureRules,
    MetricRule,
    ObserveQueryResult,
    ObserveSamples,
    RuleBook,
    RuleFiring,
    RulePending,
    RulePendingCleared,
    RuleResolved,
    RulesConfigured,
    RulesResumed,
    SeriesForgotten,
    SeriesSeen,
    SeriesState,
    Transition,
    absence_due,
    episode_stream_id,
    evaluate,
    finite,
    rule_alert,
    seen_due,
    series_key,
)
from daemon.domain.state import World


class _Out(_CoreOut):
    """The core's emitter, plus what rule decisions need: raising and resolving alerts."""

    def __init__(self, world: World, now: datetime) -> None:
        super().__init__(world, now)
        self.book = world.rulebook

    def raise_alert(self, alert: Alert) -> None:
        # The same decision as an alert arriving over HTTP: grouping, silences, incidents.
        self.events.extend(decide(self.world, ReceiveAlert(alert), self.now))

    def resolve_alert(self, fingerprint: str) -> None:
        st = self.world.alerts.get(fingerprint)
        if st is not None and st.firing:
            resolved = st.alert.model_copy(update={"status": "resolved", "ends_at": self.now})
            self.events.extend(decide(self.world, ReceiveAlert(resolved), self.now))

    def state(self, rule: str, key: str) -> SeriesState | None:
        return self.book.series.get(rule, {}).get(key)

def _ids(out: _Out, rule: str, key: str, state: SeriesState | None) -> tuple[UUID, int]:
    """The stream and version of the next event about this series (a new episode if untracked)."""
    if state is None:
        return episode_stream_id(rule, key, out.book.episodes + 1), 1
    return state.stream_id, state.version + 1


def _apply(
    out: _Out,
    rule: MetricRule,
    key: str,
    *,
    labels: Mapping[str, str],
    state: SeriesState | None,
    tr: Transition,
    value: float | None,
) -> None:
    """Record one transition (and raise or resolve the alert it implies)."""
    sid, ver = _ids(out, rule.name, key, state)
    if tr.to == "pending":
        out.emit(
            RulePending(
                **stamp(sid, ver, out.now),
                rule=rule.name,
                series=key,
                labels=dict(labels),
                value=value,
                active_since=tr.active_since,
                reason=tr.reason,
            )
        )
    elif tr.to == "firing":
        alert = rule_alert(rule, labels, value, tr.active_since)
        out.emit(
            RuleFiring(
                **stamp(sid, ver, out.now),
                rule=rule.name,
                series=key,
                labels=dict(labels),
                value=value,
                active_since=tr.active_since,
                fingerprint=alert.fingerprint,
                reason=tr.reason,
            )
        )
        out.raise_alert(alert)
    elif state is not None and state.phase == "pending":
        out.emit(
            RulePendingCleared(
                **stamp(sid, ver, out.now),
                rule=rule.name, series=key, value=value, reason=tr.reason,
            )
        )
    elif state is not None and state.phase == "firing":
        _resolve(out, rule.name, key, state, value=value, reason=tr.reason)


def _resolve(
    out: _Out, rule: str, key: str, state: SeriesState, *, value: float | None, reason: str
) -> None:
    out.emit(
        RuleResolved(
            **stamp(state.stream_id, state.version + 1, out.now),
            rule=rule,
            series=key,
            value=value,
            fingerprint=state.fingerprint,
            reason=reason,
        )
    )
    out.resolve_alert(state.fingerprint)


def _end(out: _Out, rule: str, key: str, reason: str) -> None:
    """Stop tracking a series: resolve what it fired, clear what is pending, forget the rest."""
    state = out.state(rule, key)
    if state is not None and state.phase == "firing":
        _resolve(out, rule, key, state, value=None, reason=reason)
    elif state is not None and state.phase == "pending":
        out.emit(
            RulePendingCleared(
                **stamp(state.stream_id, state.version + 1, out.now),
                rule=rule, series=key, value=None, reason=reason,
            )
        )
    state = out.state(rule, key)
    if state is not None:
        out.emit(
            SeriesForgotten(
                **stamp(state.stream_id, state.version + 1, out.now),
                rule=rule, series=key, reason=reason,
            )
        )


# --- decisions -------------------------------------------------------------------------


@_decide.register(ObserveSamples)
def _observe(cmd: ObserveSamples, world: World, now: datetime) -> list[DomainEvent]:
    out = _Out(world, now)
    book = world.rulebook
    for s in cmd.samples:
        names = book.by_metric.get(s.metric)
        if not names:
            continue
        key = ""
        for name in names:
            rule = book.rules[name]
            if rule.matchers and not rule.selects(s.metric, s.labels):
                continue
            key = key or series_key(s.labels)
            state = out.state(name, key)
            if rule.kind == "absence":
                _seen(out, rule, key, s.labels, state)
                continue
            value = finite(s.value)
            if value is None:
                continue
            # `for:` is measured on sample time (so a replayed backlog is judged as it
            # happened), capped at our clock so a device clock ahead cannot skip the wait.
            tr = evaluate(rule, state, value, min(s.ts, now))
            if tr is not None:
                _apply(out, rule, key, labels=s.labels, state=state, tr=tr, value=value)
    return out.events


def _seen(
    out: _Out, rule: MetricRule, key: str, labels: Mapping[str, str], state: SeriesState | None
) -> None:
    now = out.now
    if state is not None and state.phase == "firing":
        silent = format_duration(now - state.last_seen) if state.last_seen else "a while"
        reason = f"reported again (last recorded {silent} before)"
        _resolve(out, rule.name, key, state, value=None, reason=reason)
        state = out.state(rule.name, key)
    if seen_due(rule, state, now):
        sid, ver = _ids(out, rule.name, key, state)
        out.emit(
            SeriesSeen(
                **stamp(sid, ver, out.now),
                rule=rule.name,
                series=key,
                labels=dict(labels),
                at=now,
            )
        )


@_decide.register(ObserveQueryResult)
def _query_result(cmd: ObserveQueryResult, world: World, now: datetime) -> list[DomainEvent]:
    rule = world.rulebook.rules.get(cmd.rule)
    if rule is None or rule.kind != "query":
        raise Rejected(f"no query rule {cmd.rule!r} is configured", 404)
    out = _Out(world, now)
    present: set[str] = set()
    for s in cmd.series:
        key = series_key(s.labels)
        present.add(key)
        state = out.state(rule.name, key)
        value = finite(s.value)
        tr = evaluate(rule, state, value, now, present=True)
        if tr is not None:
            _apply(out, rule, key, labels=s.labels, state=state, tr=tr, value=value)
    for key, state in list(world.rulebook.series.get(rule.name, {}).items()):
        if key in present:
            continue
        tr = evaluate(rule, state, None, now, present=False)
        if tr is not None:
            _apply(out, rule, key, labels=state.labels, state=state, tr=tr, value=None)
    return out.events


@_decide.register(ConfigureRules)
def _configure(cmd: ConfigureRules, world: World, now: datetime) -> list[DomainEvent]:
    new = {r.name: r for r in cmd.rules}
    if len(new) != len(cmd.rules):
        dupes = sorted({r.name for r in cmd.rules if sum(x.name == r.name for x in cmd.rules) > 1})
        raise Rejected(f"rule names must be unique; repeated: {', '.join(dupes)}", 422)
    book = world.rulebook
    old = book.rules
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and new[n] != old[n])
    out = _Out(world, now)
    if added or removed or changed:
        out.emit(
            RulesConfigured(
                **stamp(RULEBOOK_ID, book.version + 1, now),
                rules=cmd.rules,
                added=added,
                changed=changed,
                removed=removed,
            )
        )
    for name in removed:
        for key in list(book.series.get(name, {})):
            _end(out, name, key, "rule removed from the configuration")
    for name in changed:
        if new[name].selection() != old[name].selection():
            for key in list(book.series.get(name, {})):
                _end(out, name, key, "rule now selects different series; starting afresh")
    if cmd.resuming and any(r.kind == "absence" for r in cmd.rules):
        out.emit(
            RulesResumed(
                **stamp(RULEBOOK_ID, world.rulebook.version + 1, now),
            )
        )
    return out.events


def _absences(world: World, now: datetime) -> list[DomainEvent]:
    """Tick: fire absence rules for series that stopped reporting."""
    out = _Out(world, now)
    book = world.rulebook
    for name, rule in book.rules.items():
        if rule.kind != "absence" or name not in book.series:
            continue
        for key, state in list(book.series[name].items()):
            if not absence_due(rule, state, now, book.resumed_at):
                continue
            alert = rule_alert(rule, state.labels, None, now)
            out.emit(
                RuleFiring(
                    **stamp(state.stream_id, state.version + 1, out.now),
                    rule=name,
                    series=key,
                    labels=state.labels,
                    value=None,
                    active_since=now,
                    fingerprint=alert.fingerprint,
                    reason=f"{rule.condition}: last sample recorded {state.last_seen}",
                )
            )
            out.raise_alert(alert)
    return out.events


TICK_HOOKS.append(_absences)


# --- evolve ----------------------------------------------------------------------------


def _drop(book: RuleBook, rule: str, key: str) -> None:
    states = book.series.get(rule)
    if states is None:
        return
    states.pop(key, None)
    if not states:
        del book.series[rule]


def _update(world: World, event: DomainEvent, rule: str, key: str, **changes: object) -> None:
    book = world.rulebook
    states = book.series.setdefault(rule, {})
    current = states.get(key)
    if current is None:
        book.episodes += 1
        labels = changes.pop("labels", {})
        states[key] = SeriesState(
            rule=rule,
            labels=labels,  # type: ignore[arg-type]
            stream_id=event.originator_id,
            version=event.originator_version,
            **changes,  # type: ignore[arg-type]
        )
        return
    changes.pop("labels", None)
    states[key] = current.model_copy(update={"version": event.originator_version, **changes})


@evolve.register(RulesConfigured)
def _configured(event: RulesConfigured, world: World) -> None:
    book = world.rulebook
    book.rules = {r.name: r for r in event.rules}
    book.version = event.originator_version
    by_metric: dict[str, list[str]] = {}
    for r in event.rules:
        if r.kind in ("threshold", "absence"):
            by_metric.setdefault(r.metric, []).append(r.name)
    book.by_metric = by_metric


@evolve.register(RulesResumed)
def _resumed(event: RulesResumed, world: World) -> None:
    world.rulebook.version = event.originator_version
    world.rulebook.resumed_at = event.timestamp


@evolve.register(RulePending)
def _pending(event: RulePending, world: World) -> None:
    _update(
        world, event, event.rule, event.series,
        labels=event.labels, phase="pending", active_since=event.active_since, value=event.value,
    )


@evolve.register(RuleFiring)
def _firing(event: RuleFiring, world: World) -> None:
    _update(
        world, event, event.rule, event.series,
        labels=event.labels,
        phase="firing",
        active_since=event.active_since,
        value=event.value,
        fingerprint=event.fingerprint,
    )


def _to_inactive(world: World, event: DomainEvent, rule: str, key: str) -> None:
    book = world.rulebook
    state = book.series.get(rule, {}).get(key)
    if state is None:
        return
    if state.last_seen is None:
        # Threshold and query series need no memory while inactive.
        _drop(book, rule, key)
        return
    _update(
        world, event, rule, key, phase="inactive", active_since=None, value=None, fingerprint=""
    )


@evolve.register(RulePendingCleared)
def _cleared(event: RulePendingCleared, world: World) -> None:
    _to_inactive(world, event, event.rule, event.series)


@evolve.register(RuleResolved)
def _resolved(event: RuleResolved, world: World) -> None:
    _to_inactive(world, event, event.rule, event.series)


@evolve.register(SeriesSeen)
def _seen_evolve(event: SeriesSeen, world: World) -> None:
    _update(world, event, event.rule, event.series, labels=event.labels, last_seen=event.at)


@evolve.register(SeriesForgotten)
def _forgotten(event: SeriesForgotten, world: World) -> None:
    _drop(world.rulebook, event.rule, event.series)
