"""Tables for the pure core: fingerprints, grouping, incident lifecycle, leases, silences.

Every decision gets an explicit `now`; nothing here reads the clock or touches I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from domainkit import T0, mk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.domain import (
    Acknowledge,
    Alert,
    Command,
    CreateSilence,
    EndSilence,
    GroupingPolicy,
    Matcher,
    ReceiveAlert,
    RecordDeadLetter,
    Rejected,
    ResolveIncident,
    Tick,
    World,
    decide,
    evolve,
    fingerprint,
)
from daemon.domain.events import AlertResolved, DomainEvent, IncidentOpened

S = timedelta(seconds=1)
M = timedelta(minutes=1)

SAMPLE_LABELS = {
    "alertname": "HighScrapeDuration",
    "cluster": "demo",
    "instance": "127.0.0.1:19090",
    "job": "prometheus",
    "severity": "warning",
    "team": "sre",
}


def kinds(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def only_incident(world: World) -> Any:
    incs = list(world.incidents.values())
    assert len(incs) <= 1, f"expected at most one incident, got {len(incs)}"
    return incs[0] if incs else None


def inc_id(world: World) -> UUID:
    inc = only_incident(world)
    assert inc is not None
    return UUID(str(inc.id))


def silence(*matchers: str, start: datetime = T0, end: datetime = T0 + 60 * M) -> CreateSilence:
    return CreateSilence(
        uuid4(), tuple(Matcher.parse(m) for m in matchers), start, end, "alice", "maintenance"
    )


# --- fingerprints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # Both values computed by Alertmanager 0.25 itself (see the webhook samples).
        (SAMPLE_LABELS, "394877885937e4c3"),
        (
            {
                "alertname": "TargetUp",
                "cluster": "demo",
                "instance": "127.0.0.1:19090",
                "job": "prometheus",
                "severity": "info",
            },
            "0c4dfaa5901187be",
        ),
        # Insertion order does not matter: names are sorted first.
        (dict(reversed(list(SAMPLE_LABELS.items()))), "394877885937e4c3"),
        # The empty label set hashes to the FNV-64a offset basis.
        ({}, "cbf29ce484222325"),
    ],
)
def test_fingerprint_is_alertmanagers(labels: dict[str, str], expected: str) -> None:
    assert fingerprint(labels) == expected


def test_fingerprint_separates_names_from_values() -> None:
    # Without the separator byte, {"ab": "c"} and {"a": "bc"} would collide.
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})
    assert fingerprint({"a": "b"}) != fingerprint({"a": "c"})


# --- grouping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group_by", "labels", "key"),
    [
        (("alertname",), {"alertname": "A", "instance": "h1"}, '{alertname="A"}'),
        (
            ("alertname", "cluster"),
            {"cluster": "c1", "alertname": "A", "instance": "h1"},
            '{alertname="A", cluster="c1"}',
        ),
        # A group_by label the alert lacks is left out of the key.
        (("alertname", "cluster"), {"alertname": "A"}, '{alertname="A"}'),
        (
            ("...",),
            {"instance": "h1", "alertname": "A", "job": "j"},
            '{alertname="A", instance="h1", job="j"}',
        ),
    ],
)
def test_group_key(group_by: tuple[str, ...], labels: dict[str, str], key: str) -> None:
    assert GroupingPolicy(group_by=group_by).group_key(labels) == key


@pytest.mark.parametrize(
    ("group_by", "incidents"),
    [
        (("alertname",), 1),
        (("alertname", "cluster"), 1),
        (("alertname", "instance"), 2),
        (("...",), 2),
    ],
)
def test_alerts_group_into_incidents(group_by: tuple[str, ...], incidents: int) -> None:
    world = World(policy=GroupingPolicy(group_by=group_by))
    for host in ("h1", "h2"):
        decide(world, ReceiveAlert(mk("DiskFull", cluster="c1", instance=host)), T0)
    assert len(world.incidents) == incidents
    assert sum(i.alerts_total for i in world.incidents.values()) == 2
    assert sum(i.firing for i in world.incidents.values()) == 2


def test_incident_takes_the_highest_severity() -> None:
    world = World()
    decide(world, ReceiveAlert(mk("X", severity="warning", instance="a")), T0)
    decide(world, ReceiveAlert(mk("X", severity="critical", instance="b")), T0)
    decide(world, ReceiveAlert(mk("X", severity="info", instance="c")), T0)
    assert only_incident(world).severity == "critical"


# --- incident lifecycle -------------------------------------------------------------------

Step = tuple[timedelta, Callable[[World], Command], list[str], str | None]

# Webhook-style alerts (no lease), so only the listed commands move the incident.
LIFECYCLE: list[Step] = [
    (0 * M, lambda w: ReceiveAlert(mk()), ["IncidentOpened", "AlertFired"], "open"),
    (1 * M, lambda w: ReceiveAlert(mk()), [], "open"),
    (
        2 * M,
        lambda w: Acknowledge(inc_id(w), "alice", "on it"),
        ["IncidentAcknowledged"],
        "acknowledged",
    ),
    (
        3 * M,
        lambda w: ReceiveAlert(mk(status="resolved", ends=T0 + 3 * M)),
        ["AlertResolved", "IncidentResolved"],
        "resolved",
    ),
    (4 * M, lambda w: Tick(), [], "resolved"),
    # Fires again 7 minutes after resolving: inside the 30m window, so the same incident.
    (
        10 * M,
        lambda w: ReceiveAlert(mk(starts=T0 + 10 * M)),
        ["IncidentReopened", "AlertFired"],
        "open",
    ),
    (
        11 * M,
        lambda w: ResolveIncident(inc_id(w), "bob", "fixed"),
        ["IncidentResolved"],
        "resolved",
    ),
    # Resolved by hand while the alert still fires: after the grace period it reopens.
    (16 * M - S, lambda w: Tick(), [], "resolved"),
    (16 * M, lambda w: Tick(), ["IncidentReopened"], "open"),
    (
        17 * M,
        lambda w: ReceiveAlert(mk(status="resolved", ends=T0 + 17 * M)),
        ["AlertResolved", "IncidentResolved"],
        "resolved",
    ),
    (47 * M - S, lambda w: Tick(), [], "resolved"),
    (47 * M, lambda w: Tick(), ["IncidentClosed"], None),
    # It fires again after the close: a new incident, not a reopen.
    (
        48 * M,
        lambda w: ReceiveAlert(mk(starts=T0 + 48 * M)),
        ["IncidentOpened", "AlertFired"],
        "open",
    ),
]


def test_incident_lifecycle() -> None:
    world = World()
    ids: list[UUID] = []
    for at, command, expected, state in LIFECYCLE:
        events = decide(world, command(world), T0 + at)
        assert kinds(events) == expected, f"at +{at}"
        inc = only_incident(world)
        assert (inc.state if inc else None) == state, f"at +{at}"
        if inc is not None and (not ids or ids[-1] != inc.id):
            ids.append(inc.id)
    first, second = ids
    assert first != second
    closed = world.closed[first]
    assert closed.state == "closed"
    assert closed.reopen_count == 2
    assert world.incidents[second].alerts_total == 1


def test_acknowledgement_and_reopen_details() -> None:
    world = World()
    decide(world, ReceiveAlert(mk()), T0)
    decide(world, Acknowledge(inc_id(world), "alice", "on it"), T0 + M)
    inc = only_incident(world)
    assert (inc.state, inc.acknowledged_by) == ("acknowledged", "alice")
    decide(world, ResolveIncident(inc.id, "bob", "restarted"), T0 + 2 * M)
    inc = only_incident(world)
    assert (inc.state, inc.resolved_by, inc.resolved_at) == ("resolved", "bob", T0 + 2 * M)
    # A new alert of the same group reopens and clears who acked and who resolved.
    events = decide(world, ReceiveAlert(mk(instance="other")), T0 + 3 * M)
    assert kinds(events) == ["IncidentReopened", "AlertFired"]
    inc = only_incident(world)
    assert (inc.state, inc.acknowledged_by, inc.resolved_by, inc.resolved_at) == (
        "open",
        "",
        "",
        None,
    )


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (29 * M, ["IncidentReopened", "AlertFired"]),
        (30 * M - S, ["IncidentReopened", "AlertFired"]),
        # The window has passed: even with no Tick in between, the old incident is not reused.
        (30 * M, ["IncidentClosed", "IncidentOpened", "AlertFired"]),
        (3 * 60 * M, ["IncidentClosed", "IncidentOpened", "AlertFired"]),
    ],
)
def test_reopen_only_within_the_window(gap: timedelta, expected: list[str]) -> None:
    world = World()
    decide(world, ReceiveAlert(mk()), T0)
    decide(world, ReceiveAlert(mk(status="resolved", ends=T0 + M)), T0 + M)
    old = inc_id(world)
    events = decide(world, ReceiveAlert(mk(starts=T0 + M + gap)), T0 + M + gap)
    assert kinds(events) == expected
    assert (inc_id(world) == old) == (expected[0] == "IncidentReopened")


# --- leases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick_at", "expected"),
    [
        (5 * M - S, []),
        (5 * M, ["AlertResolved", "IncidentResolved"]),
        (7 * M, ["AlertResolved", "IncidentResolved"]),
    ],
)
def test_lease_expires_on_tick(tick_at: timedelta, expected: list[str]) -> None:
    world = World()
    # What the v2 parser makes of an alert without endsAt: a lease of resolve_timeout.
    decide(world, ReceiveAlert(mk(ends=T0 + world.policy.resolve_timeout)), T0)
    events = decide(world, Tick(), T0 + tick_at)
    assert kinds(events) == expected
    if events:
        resolved = events[0]
        assert isinstance(resolved, AlertResolved)
        # A late tick still records when the lease really ran out.
        assert resolved.resolved_at == T0 + 5 * M
        assert resolved.reason.startswith("lease expired")
        assert only_incident(world).firing == 0


@pytest.mark.parametrize(
    ("now", "new_ends", "lease_end"),
    [
        (1 * M, 5 * M, 5 * M),  # an identical repeat
        (1 * M, 6 * M, 6 * M),  # a renewal moves the lease
        (3 * M, 4 * M, 5 * M),  # a shorter lease never shortens it
        (1 * M, None, 5 * M),  # a lease-less delivery leaves the lease alone
    ],
)
def test_lease_renewal_is_soft_state_and_records_no_event(
    now: timedelta, new_ends: timedelta | None, lease_end: timedelta
) -> None:
    world = World()
    decide(world, ReceiveAlert(mk(ends=T0 + 5 * M)), T0)
    ends = T0 + new_ends if new_ends is not None else None
    assert decide(world, ReceiveAlert(mk(ends=ends)), T0 + now) == []
    assert world.lease_end(mk().fingerprint) == T0 + lease_end
    # The recorded alert is what the log says, whatever the renewals.
    assert world.alerts[mk().fingerprint].alert.ends_at == T0 + 5 * M


def test_renewed_lease_expires_on_tick_when_renewals_stop() -> None:
    world = World()
    decide(world, ReceiveAlert(mk(ends=T0 + 1 * M)), T0)
    decide(world, ReceiveAlert(mk(ends=T0 + 3 * M)), T0 + 2 * M)
    assert decide(world, Tick(), T0 + 2 * M + 59 * S) == []
    events = decide(world, Tick(), T0 + 3 * M)
    assert kinds(events) == ["AlertResolved", "IncidentResolved"]
    resolved = events[0]
    assert isinstance(resolved, AlertResolved)
    assert resolved.resolved_at == T0 + 3 * M


def test_after_restart_leases_wait_for_the_grace_period() -> None:
    # Renewals are not in the log: a rebuilt world only knows the first lease, so no lease
    # expires before lease_grace_until (set by the Ingestor to start + resolve_timeout).
    world = World()
    decide(world, ReceiveAlert(mk(ends=T0 + 1 * M)), T0)
    world.leases.clear()
    world.lease_grace_until = T0 + 10 * M
    assert decide(world, Tick(), T0 + 9 * M) == []
    decide(world, ReceiveAlert(mk(ends=T0 + 12 * M)), T0 + 9 * M)
    assert decide(world, Tick(), T0 + 11 * M) == []
    assert kinds(decide(world, Tick(), T0 + 12 * M)) == ["AlertResolved", "IncidentResolved"]


def test_prometheus_stream_records_no_renewals_and_never_lapses() -> None:
    # Prometheus re-sends every firing alert each evaluation (15s) with a 60s lease.
    world = World()
    events: list[DomainEvent] = []
    for i in range(240):  # one hour
        now = T0 + i * 15 * S
        events += decide(world, Tick(), now)
        events += decide(world, ReceiveAlert(mk(ends=now + 60 * S)), now)
    assert kinds(events) == ["IncidentOpened", "AlertFired"]
    assert only_incident(world).state == "open"


def test_repeats_of_an_unchanged_firing_alert_produce_no_event() -> None:
    world = World()
    decide(world, ReceiveAlert(mk(ends=T0 + 5 * M, annotations={"summary": "s"})), T0)
    webhook_style = mk("Other", annotations={"summary": "s"})
    decide(world, ReceiveAlert(webhook_style), T0)
    before = world.model_dump()
    for i in range(1, 50):
        now = T0 + i * S
        assert (
            decide(world, ReceiveAlert(mk(ends=T0 + 5 * M, annotations={"summary": "s"})), now)
            == []
        )
        assert decide(world, ReceiveAlert(webhook_style), now) == []
    assert world.model_dump() == before
    # New annotations on a lease-less alert are a change worth recording.
    changed = mk("Other", annotations={"summary": "worse"})
    assert kinds(decide(world, ReceiveAlert(changed), T0 + 60 * S)) == ["AlertUpdated"]


# --- resolution by the source ------------------------------------------------------------


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        # Alertmanager webhook: status resolved, endsAt the resolution time.
        (mk(status="resolved", ends=T0 + 2 * M), ["AlertResolved", "IncidentResolved"]),
        # Prometheus: the last delivery carries endsAt at (or before) the resolution time.
        (mk(ends=T0 + 2 * M), ["AlertResolved", "IncidentResolved"]),
        (mk(ends=T0 + M), ["AlertResolved", "IncidentResolved"]),
        # Resolution of an alert nobody saw firing changes nothing.
        (mk("Unknown", status="resolved", ends=T0 + 2 * M), []),
    ],
)
def test_resolved_by_source(incoming: Alert, expected: list[str]) -> None:
    world = World()
    decide(world, ReceiveAlert(mk()), T0)
    events = decide(world, ReceiveAlert(incoming), T0 + 2 * M)
    assert kinds(events) == expected
    if events:
        resolved = events[0]
        assert isinstance(resolved, AlertResolved)
        assert resolved.reason == "resolved by source"
        assert resolved.resolved_at == incoming.ends_at
        # Hearing the resolution again is not news.
        assert decide(world, ReceiveAlert(incoming), T0 + 3 * M) == []


def test_incident_resolves_only_with_its_last_alert() -> None:
    world = World()
    decide(world, ReceiveAlert(mk(instance="h1")), T0)
    decide(world, ReceiveAlert(mk(instance="h2")), T0)
    gone = mk(instance="h1", status="resolved", ends=T0 + M)
    assert kinds(decide(world, ReceiveAlert(gone), T0 + M)) == ["AlertResolved"]
    assert only_incident(world).state == "open"
    last = mk(instance="h2", status="resolved", ends=T0 + 2 * M)
    assert kinds(decide(world, ReceiveAlert(last), T0 + 2 * M)) == [
        "AlertResolved",
        "IncidentResolved",
    ]


# --- silences -----------------------------------------------------------------------------


def test_silenced_alert_is_recorded_but_opens_no_incident() -> None:
    world = World()
    assert kinds(decide(world, silence("alertname=Noisy"), T0)) == ["SilenceCreated"]
    events = decide(world, ReceiveAlert(mk("Noisy")), T0 + M)
    assert kinds(events) == ["AlertSilenced"]
    assert world.incidents == {}
    assert world.alerts[mk("Noisy").fingerprint].silenced_by == (world.silences.popitem()[0],)


def test_expired_silence_lets_the_still_firing_alert_open_an_incident() -> None:
    world = World()
    decide(world, silence("alertname=Noisy", end=T0 + 60 * M), T0)
    decide(world, ReceiveAlert(mk("Noisy")), T0 + M)
    assert decide(world, ReceiveAlert(mk("Noisy")), T0 + 2 * M) == []
    assert decide(world, Tick(), T0 + 60 * M - S) == []
    events = decide(world, Tick(), T0 + 60 * M)
    assert kinds(events) == ["SilenceEnded", "AlertResolved", "IncidentOpened", "AlertFired"]
    inc = only_incident(world)
    assert inc.title == "Noisy"
    assert inc.firing == 1
    # From now on it behaves like any incident alert.
    assert decide(world, ReceiveAlert(mk("Noisy")), T0 + 61 * M) == []


def test_silence_that_resolves_while_muted_leaves_nothing_behind() -> None:
    world = World()
    decide(world, silence("alertname=Noisy"), T0)
    decide(world, ReceiveAlert(mk("Noisy")), T0 + M)
    events = decide(
        world, ReceiveAlert(mk("Noisy", status="resolved", ends=T0 + 2 * M)), T0 + 2 * M
    )
    assert kinds(events) == ["AlertResolved"]
    assert world.alerts == {}
    assert kinds(decide(world, Tick(), T0 + 60 * M)) == ["SilenceEnded"]
    assert world.incidents == {}


@pytest.mark.parametrize(
    ("matchers", "labels", "muted"),
    [
        (("alertname=Noisy",), {"instance": "web1"}, True),
        (('instance=~"web.*"',), {"instance": "web1"}, True),
        # Regexes are anchored, as in Alertmanager.
        (('instance=~"web"',), {"instance": "web1"}, False),
        (("alertname=Noisy", "instance!=web1"), {"instance": "web1"}, False),
        (("alertname=Noisy", "instance!=web1"), {"instance": "db1"}, True),
        (("alertname=Noisy", 'instance!~"db.*"'), {"instance": "db1"}, False),
        (("alertname=Noisy", 'instance!~"db.*"'), {"instance": "web1"}, True),
    ],
)
def test_silence_matchers(matchers: tuple[str, ...], labels: dict[str, str], muted: bool) -> None:
    world = World()
    decide(world, silence(*matchers), T0)
    events = decide(world, ReceiveAlert(mk("Noisy", instance=labels["instance"])), T0 + M)
    assert kinds(events) == (["AlertSilenced"] if muted else ["IncidentOpened", "AlertFired"])


def test_silenced_again_after_its_lease_lapsed_starts_a_new_stream() -> None:
    # Prometheus keeps startsAt while a rule stays active; a lapsed lease and a later
    # delivery make a second silenced episode of the same alert.
    world = World()
    events = decide(world, silence("alertname=Noisy"), T0)
    events += decide(world, ReceiveAlert(mk("Noisy", ends=T0 + 5 * M)), T0)
    events += decide(world, Tick(), T0 + 6 * M)
    events += decide(world, ReceiveAlert(mk("Noisy", ends=T0 + 12 * M)), T0 + 7 * M)
    assert kinds(events) == ["SilenceCreated", "AlertSilenced", "AlertResolved", "AlertSilenced"]
    first, second = events[1], events[3]
    assert first.originator_id != second.originator_id
    assert second.originator_version == 1
    _check_invariants(world, events)


def test_pending_silence_does_not_mute_yet() -> None:
    world = World()
    decide(world, silence("alertname=Noisy", start=T0 + 10 * M, end=T0 + 20 * M), T0)
    assert kinds(decide(world, ReceiveAlert(mk("Noisy", x="1")), T0 + M)) == [
        "IncidentOpened",
        "AlertFired",
    ]
    assert kinds(decide(world, ReceiveAlert(mk("Noisy", x="2")), T0 + 10 * M)) == ["AlertSilenced"]


def test_ended_silence_stops_muting() -> None:
    world = World()
    create = silence("alertname=Noisy")
    decide(world, create, T0)
    assert kinds(decide(world, EndSilence(create.silence_id, "bob"), T0 + M)) == ["SilenceEnded"]
    assert world.silences[create.silence_id].state(T0 + M) == "expired"
    assert kinds(decide(world, ReceiveAlert(mk("Noisy")), T0 + 2 * M)) == [
        "IncidentOpened",
        "AlertFired",
    ]


@pytest.mark.parametrize(
    ("command", "status", "reason"),
    [
        (CreateSilence(uuid4(), (), T0, T0 + M, "a"), 422, "at least one matcher"),
        (silence('alertname=~".*"'), 422, "matches every alert"),
        (silence("alertname!=Foo"), 422, "matches every alert"),
        (silence('alertname=""'), 422, "matches every alert"),
        (silence('a=~".*"', 'b!="x"', 'c=""'), 422, "matches every alert"),
        (silence("alertname=X", start=T0 + M, end=T0 + M), 422, "endsAt must be after startsAt"),
        (silence("alertname=X", start=T0 - 2 * M, end=T0 - M), 422, "endsAt is in the past"),
    ],
)
def test_silence_rules(command: CreateSilence, status: int, reason: str) -> None:
    world = World()
    with pytest.raises(Rejected) as caught:
        decide(world, command, T0)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert world.silences == {}


def test_silence_with_one_narrowing_matcher_is_accepted() -> None:
    world = World()
    decide(world, silence('alertname=~".*"', "cluster=prod"), T0)
    assert len(world.silences) == 1


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ("alertname=Foo", "alertname", "=", "Foo"),
        ('alertname="Foo Bar"', "alertname", "=", "Foo Bar"),
        ('instance=~"web.*"', "instance", "=~", "web.*"),
        ("instance!~db.*", "instance", "!~", "db.*"),
        (" severity != 'info' ", "severity", "!=", "info"),
    ],
)
def test_matcher_parse(text: str, name: str, op: str, value: str) -> None:
    m = Matcher.parse(text)
    assert (m.name, m.op, m.value) == (name, op, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("=Foo", "bad matcher"),
        ("alertname", "bad matcher"),
        ("9lives=x", "bad matcher"),
        ('a=~"("', "invalid regular expression"),
    ],
)
def test_matcher_parse_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Matcher.parse(text)


# --- refusals -----------------------------------------------------------------------------


def _open(world: World) -> UUID:
    decide(world, ReceiveAlert(mk()), T0)
    return inc_id(world)


def _acked(world: World) -> UUID:
    iid = _open(world)
    decide(world, Acknowledge(iid, "alice"), T0 + M)
    return iid


def _resolved(world: World) -> UUID:
    iid = _open(world)
    decide(world, ResolveIncident(iid, "bob"), T0 + M)
    return iid


def _closed(world: World) -> UUID:
    iid = _open(world)
    decide(world, ReceiveAlert(mk(status="resolved", ends=T0 + M)), T0 + M)
    decide(world, Tick(), T0 + 40 * M)
    assert iid in world.closed
    return iid


REFUSALS: list[tuple[str, Callable[[World], UUID], Callable[[UUID], Command], int, str]] = [
    ("ack twice", _acked, lambda i: Acknowledge(i, "carol"), 409, "already acknowledged by alice"),
    ("ack resolved", _resolved, lambda i: Acknowledge(i, "carol"), 409, "incident is resolved"),
    ("resolve resolved", _resolved, lambda i: ResolveIncident(i, "c"), 409, "already resolved"),
    ("resolve closed", _closed, lambda i: ResolveIncident(i, "carol"), 404, "closed or unknown"),
    ("ack closed", _closed, lambda i: Acknowledge(i, "carol"), 404, "closed or unknown"),
    ("ack unknown", _open, lambda i: Acknowledge(uuid4(), "carol"), 404, "closed or unknown"),
]


@pytest.mark.parametrize(
    ("setup", "command", "status", "reason"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refusals(
    setup: Callable[[World], UUID],
    command: Callable[[UUID], Command],
    status: int,
    reason: str,
) -> None:
    world = World()
    iid = setup(world)
    before = world.model_dump()
    with pytest.raises(Rejected) as caught:
        decide(world, command(iid), T0 + 50 * M)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert world.model_dump() == before


def test_silence_refusals() -> None:
    world = World()
    create = silence("alertname=X")
    decide(world, create, T0)
    with pytest.raises(Rejected) as dup:
        decide(world, create, T0)
    assert (dup.value.status, "already exists" in dup.value.reason) == (409, True)
    with pytest.raises(Rejected) as unknown:
        decide(world, EndSilence(uuid4(), "bob"), T0)
    assert unknown.value.status == 404
    decide(world, EndSilence(create.silence_id, "bob"), T0 + M)
    with pytest.raises(Rejected) as again:
        decide(world, EndSilence(create.silence_id, "bob"), T0 + 2 * M)
    assert (again.value.status, again.value.reason) == (409, "silence already expired")


def test_dead_letter_is_recorded_and_changes_no_state() -> None:
    world = World()
    before = world.model_dump()
    cmd = RecordDeadLetter(uuid4(), "api_v2", "alerts[0].labels: required", "[{}]", 4)
    assert kinds(decide(world, cmd, T0)) == ["DeadLetterRecorded"]
    assert world.model_dump() == before


# --- the fold: live state equals state rebuilt from the events -----------------------------

NAMES = ("A", "B")
HOSTS = ("h1", "h2", "h3")

alert_ops = st.tuples(
    st.just("alert"),
    st.sampled_from(NAMES),
    st.sampled_from(HOSTS),
    st.sampled_from(["lease", "short-lease", "webhook", "resolved", "expired"]),
    st.booleans(),  # keep the first startsAt (Prometheus) or start now
)
person_ops = st.tuples(
    st.sampled_from(["ack", "resolve", "unsilence"]), st.integers(min_value=0, max_value=5)
)
silence_ops = st.tuples(
    st.just("silence"),
    # The last one matches every alert and is refused.
    st.sampled_from(["alertname=A", 'instance=~"h[12]"', 'alertname=~"A|B"', 'alertname=~".*"']),
    st.sampled_from([0, 1, 10]),  # minutes until it starts
    st.sampled_from([1, 5, 30]),  # minutes it lasts
)
other_ops = st.sampled_from([("tick",), ("dead-letter",)])
steps = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 15, 60, 300, 900]),  # seconds that pass before the step
        st.one_of(alert_ops, alert_ops, person_ops, silence_ops, other_ops),
    ),
    max_size=60,
)


def _command(op: tuple[Any, ...], world: World, now: datetime) -> Command:
    kind = op[0]
    if kind == "alert":
        _, name, host, shape, keep_start = op
        starts = T0 if keep_start else now
        ends = {
            "lease": now + 5 * M,
            "short-lease": now + 30 * S,
            "webhook": None,
            "resolved": now,
            "expired": now - M,
        }[shape]
        status = "resolved" if shape == "resolved" else "firing"
        return ReceiveAlert(mk(name, instance=host, status=status, ends=ends, starts=starts))
    if kind in ("ack", "resolve"):
        known = sorted([*world.incidents, *world.closed], key=str) or [uuid4()]
        target = known[op[1] % len(known)]
        return Acknowledge(target, "alice") if kind == "ack" else ResolveIncident(target, "bob")
    if kind == "unsilence":
        ids = sorted(world.silences, key=str) or [uuid4()]
        return EndSilence(ids[op[1] % len(ids)], "bob")
    if kind == "silence":
        _, matcher, start, length = op
        begin = now + start * M
        return CreateSilence(uuid4(), (Matcher.parse(matcher),), begin, begin + length * M, "alice")
    if kind == "tick":
        return Tick()
    return RecordDeadLetter(uuid4(), "api_v2", "bad", "{", 1)


def _shared_by_walk(states: list[Any]) -> dict[str, str] | None:
    """What every state's alert labels hold in common, the slow way (None for none)."""
    if not states:
        return None
    pairs = set(states[0].alert.labels.items())
    for s in states[1:]:
        pairs &= set(s.alert.labels.items())
    return dict(pairs)


def _check_invariants(world: World, events: list[DomainEvent]) -> None:
    for inc in world.incidents.values():
        attached = world.incident_alerts(inc.id)
        assert inc.firing == sum(1 for a in attached if a.firing)
        # Asked after every step, so the memo is filled early and evolve must keep it
        # right through every later fire, resolve, silence, move and close.
        firing = [a for a in attached if a.firing]
        assert world.shared_labels(inc.id, firing_only=True) == _shared_by_walk(firing)
        assert world.shared_labels(inc.id) == _shared_by_walk(attached)
        assert world.groups.get(inc.group_key) == inc.id or not inc.is_active
    active = [i.group_key for i in world.incidents.values() if i.is_active]
    assert len(active) == len(set(active)), "two active incidents for one group"
    # The store refuses a second event at the same (stream, version): versions must count up.
    versions: dict[UUID, list[int]] = {}
    for e in events:
        versions.setdefault(e.originator_id, []).append(e.originator_version)
    for stream, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"stream {stream} versions {vs}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, group_by=st.sampled_from([("alertname",), ("alertname", "instance"), ("...",)]))
def test_folding_the_events_rebuilds_the_live_world(
    steps: list[tuple[int, tuple[Any, ...]]], group_by: tuple[str, ...]
) -> None:
    # A short reopen window so that sequences reach closing and reopening.
    policy = GroupingPolicy(group_by=group_by, reopen_window=10 * M)
    live = World(policy=policy)
    emitted: list[DomainEvent] = []
    now = T0
    for seconds, op in steps:
        now += seconds * S
        command = _command(op, live, now)
        before = live.model_dump()
        try:
            emitted += decide(live, command, now)
        except Rejected:
            assert live.model_dump() == before, "a refused command changed state"
        _check_invariants(live, emitted)
    rebuilt = World(policy=policy)
    for event in emitted:
        # Through JSON, as the event store keeps them.
        evolve(type(event).model_validate_json(event.model_dump_json()), rebuilt)
    assert rebuilt.model_dump() == live.model_dump()


def test_a_fresh_world_from_the_opening_event_alone() -> None:
    # Guards the fold above against a vacuous pass: one event must build an incident.
    world = World()
    events = decide(world, ReceiveAlert(mk()), T0)
    opened = events[0]
    assert isinstance(opened, IncidentOpened)
    rebuilt = World()
    evolve(opened, rebuilt)
    assert list(rebuilt.incidents) == [opened.originator_id]


def test_group_key_memo_keeps_policies_and_values_apart() -> None:
    """Group keys are memoized by the grouping labels' values, per policy."""
    by_name = GroupingPolicy(group_by=("alertname",))
    by_both = GroupingPolicy(group_by=("alertname", "cluster"))
    labels = {"alertname": "A", "cluster": "c1", "instance": "h1"}
    for _ in range(2):  # the second round is answered from the memo
        assert by_name.group_key(labels) == '{alertname="A"}'
        assert by_both.group_key(labels) == '{alertname="A", cluster="c1"}'
        assert by_both.group_key({**labels, "cluster": "c2"}) == '{alertname="A", cluster="c2"}'
        assert by_both.group_key({"alertname": "A", "cluster": ""}) == '{alertname="A"}'


def test_common_labels_of_firing_alerts_then_of_all() -> None:
    from daemon.runbooks.context_tools import common_labels, incident_context

    world = World(policy=GroupingPolicy(group_by=("alertname",)))
    a1 = mk("Disk", instance="h1", job="node", dc="x")
    a2 = mk("Disk", instance="h2", job="node", dc="y")
    a3 = mk("Disk", instance="h3", job="db", dc="x")
    for a in (a1, a2, a3):
        decide(world, ReceiveAlert(a), T0)
    inc = inc_id(world)
    assert common_labels(world, inc) == {"alertname": "Disk"}
    decide(world, ReceiveAlert(mk("Disk", status="resolved", instance="h3", job="db", dc="x")), T0)
    # Only firing alerts count while any fire.
    assert common_labels(world, inc) == {"alertname": "Disk", "job": "node"}
    for a in (a1, a2):
        rest = {k: v for k, v in a.labels.items() if k != "alertname"}
        resolved = mk("Disk", status="resolved", **rest)
        decide(world, ReceiveAlert(resolved), T0)
    # None firing: what all of them share.
    assert common_labels(world, inc) == {"alertname": "Disk"}
    ctx = incident_context(world, inc)
    assert [a["labels"]["instance"] for a in ctx["alerts"]] == ["h1", "h2", "h3"]


def test_incident_copy_matches_model_copy() -> None:
    """evolve's fast incident copy builds what pydantic's model_copy builds."""
    from daemon.domain.evolve import _copy
    from daemon.domain.state import Incident

    # What the copy relies on: frozen, no private attributes, no extras.
    assert Incident.model_config.get("frozen")
    assert not Incident.__private_attributes__
    assert Incident.model_config.get("extra") in (None, "ignore")
    inc = Incident(
        id=uuid4(),
        version=1,
        group_key="{}",
        group_labels={"alertname": "A"},
        opened_at=T0,
        updated_at=T0,
        title="A",
    )
    changes: dict[str, Any] = {"version": 2, "updated_at": T0 + M, "firing": 3}
    fast, slow = _copy(inc, dict(changes)), inc.model_copy(update=changes)
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert (inc.version, inc.firing) == (1, 0)  # the original is untouched
    again = _copy(fast, {"version": 3, "firing": 4})
    assert again.model_fields_set is fast.model_fields_set  # shared once it holds the names
    assert (again.version, again.firing, fast.firing) == (3, 4, 3)


def test_incident_context_shows_fifty_alerts_and_counts_the_rest() -> None:
    from daemon.runbooks.context_tools import MAX_ALERTS, incident_context

    world = World(policy=GroupingPolicy(group_by=("alertname",)))
    for i in range(MAX_ALERTS + 7):
        decide(world, ReceiveAlert(mk("Many", instance=f"h{i}")), T0)
    ctx = incident_context(world, inc_id(world))
    assert len(ctx["alerts"]) == MAX_ALERTS
    assert ctx["alerts_not_shown"] == 7
    assert ctx["incident"]["alerts_total"] == MAX_ALERTS + 7


def test_reaction_filters_name_leaf_event_classes() -> None:
    """Reactions filter by exact type: a subclass of a filtered event would be missed."""
    from daemon.actions.reaction import _INTERESTING
    from daemon.agent.reaction import _STARTS
    from daemon.notify.reaction import _LIFECYCLE

    for cls in _INTERESTING | _STARTS | _LIFECYCLE:
        assert cls.__subclasses__() == [], f"{cls.__name__} has subclasses"


# --- a manual resolve cannot hide an alert that still fires --------------------------------


def _resolved_by_hand(world: World) -> UUID:
    """An incident a person resolved while its alert (a webhook alert, no lease) still fires."""
    decide(world, ReceiveAlert(mk()), T0)
    iid = inc_id(world)
    decide(world, ResolveIncident(iid, "bob"), T0 + M)
    assert (only_incident(world).state, only_incident(world).firing) == ("resolved", 1)
    return iid


@pytest.mark.parametrize(
    ("at", "command", "expected", "reason"),
    [
        # The same occurrence re-sent inside the grace period: a repeat, nothing recorded.
        (2 * M, ReceiveAlert(mk()), [], ""),
        (5 * M + 59 * S, Tick(), [], ""),
        # A new occurrence (later startsAt) reopens at once.
        (
            2 * M,
            ReceiveAlert(mk(starts=T0 + 2 * M)),
            ["IncidentReopened"],
            "HighScrapeDuration fired again after a manual resolve",
        ),
        # Still firing once the grace period (5m after the resolve) is over.
        (6 * M, Tick(), ["IncidentReopened"], "1 alert(s) still firing 5m after bob resolved it"),
        (6 * M, ReceiveAlert(mk()), ["IncidentReopened"], "still firing 5m after bob"),
        # Long after, when the reopen window would close it: it reopens instead.
        (45 * M, Tick(), ["IncidentReopened"], "still firing 44m after bob"),
        # The alert stopped: the incident stays resolved.
        (2 * M, ReceiveAlert(mk(status="resolved", ends=T0 + 2 * M)), ["AlertResolved"], ""),
    ],
)
def test_a_manually_resolved_incident_reopens_while_its_alert_fires(
    at: timedelta, command: Command, expected: list[str], reason: str
) -> None:
    world = World()
    iid = _resolved_by_hand(world)
    events = decide(world, command, T0 + at)
    assert kinds(events) == expected
    if expected == ["IncidentReopened"]:
        assert reason in events[0].reason  # type: ignore[attr-defined]
        inc = world.incidents[iid]
        assert (inc.state, inc.firing, inc.reopen_count) == ("open", 1, 1)
        # Reopened once: the next repeat and tick record nothing more.
        assert decide(world, ReceiveAlert(mk()), T0 + at + S) == []
        assert decide(world, Tick(), T0 + at + 2 * S) == []
    else:
        assert world.incidents[iid].state == "resolved"


def test_an_incident_resolved_after_its_alerts_stopped_closes_as_before() -> None:
    world = World()
    decide(world, ReceiveAlert(mk()), T0)
    decide(world, ReceiveAlert(mk(status="resolved", ends=T0 + M)), T0 + M)
    assert kinds(decide(world, Tick(), T0 + 10 * M)) == []
    assert kinds(decide(world, Tick(), T0 + 31 * M)) == ["IncidentClosed"]
