"""Situations in the pure core: target hosts, correlation within a window, links by hand."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from domainkit import T0, mk

from daemon.domain import (
    GroupingPolicy,
    ReceiveAlert,
    Rejected,
    ResolveIncident,
    Tick,
    World,
    evolve,
)
from daemon.domain import decide as decide_
from daemon.domain.events import DomainEvent
from daemon.domain.situation_model import (
    Correlation,
    LinkIncidents,
    SituationLinked,
    SituationOpened,
    UnlinkIncident,
)
from daemon.domain.targets import target_host

S = timedelta(seconds=1)
M = timedelta(minutes=1)
POLICY = GroupingPolicy(
    group_by=("alertname", "instance", "service"),
    correlation=Correlation(enabled=True, window=5 * M, keys=("cluster",)),
)


def decide(world: World, cmd: object, at: timedelta = timedelta(0)) -> list[DomainEvent]:
    return decide_(world, cmd, T0 + at)  # type: ignore[arg-type]


def kinds(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def incident_of(world: World, name: str) -> UUID:
    return next(i.id for i in world.incidents.values() if i.title == name)


@pytest.mark.parametrize(
    ("labels", "host"),
    [
        ({"instance": "node1:9100"}, "node1"),
        ({"instance": "node1"}, "node1"),
        ({"instance": "10.0.0.5:9100"}, "10.0.0.5"),
        ({"instance": "[2001:db8::1]:9100"}, "2001:db8::1"),
        ({"instance": "2001:db8::1"}, "2001:db8::1"),
        ({"instance": "https://user@web.example:8443/health"}, "web.example"),
        ({"host": "db1", "hostname": "x"}, "db1"),
        ({"hostname": "db2", "nodename": "y"}, "db2"),
        ({"nodename": "k8s-node-3"}, "k8s-node-3"),
        ({"instance": "", "host": "db1"}, "db1"),
        ({"job": "x"}, ""),
    ],
)
def test_target_host_from_labels(labels: dict[str, str], host: str) -> None:
    assert target_host(labels) == host


def test_incidents_on_one_host_within_the_window_form_one_situation() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("NodeDown", instance="node1:9100")))
    events = decide(world, ReceiveAlert(mk("ServiceDown", instance="node1:8080", service="api")), S)
    assert kinds(events) == ["IncidentOpened", "AlertFired", "SituationOpened", "SituationLinked"]
    opened, linked = events[2], events[3]
    assert isinstance(opened, SituationOpened)
    assert isinstance(linked, SituationLinked)
    assert opened.lead_incident_id == incident_of(world, "NodeDown")
    assert linked.rule == "same host"
    assert "host=node1" in linked.reason
    # A third incident on the host joins the same situation.
    third = decide(world, ReceiveAlert(mk("DiskFull", instance="node1:9100")), 2 * S)
    assert kinds(third)[-1] == "SituationLinked"
    (s,) = world.situations.active.values()
    assert len(s.members) == 3
    assert s.lead == incident_of(world, "NodeDown")
    assert world.situations.is_member(incident_of(world, "DiskFull"))
    assert not world.situations.is_member(incident_of(world, "NodeDown"))


def test_configured_key_links_incidents_on_different_hosts() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("A", instance="h1", cluster="prod")))
    events = decide(world, ReceiveAlert(mk("B", instance="h2", cluster="prod")), S)
    assert kinds(events)[-1] == "SituationLinked"
    assert events[-1].rule == "same cluster"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("second", "gap", "linked"),
    [
        ({"instance": "node1:9100"}, 4 * M, True),
        ({"instance": "node1:9100"}, 6 * M, False),  # outside the window
        ({"instance": "node2:9100"}, S, False),  # another host
        ({"job": "nohost"}, S, False),  # no host at all
    ],
)
def test_correlation_needs_a_shared_key_within_the_window(
    second: dict[str, str], gap: timedelta, linked: bool
) -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("First", instance="node1:9100")))
    events = decide(world, ReceiveAlert(mk("Second", **second)), gap)
    assert ("SituationLinked" in kinds(events)) is linked


def test_correlation_off_links_nothing() -> None:
    world = World(policy=GroupingPolicy(group_by=("alertname",)))
    decide(world, ReceiveAlert(mk("A", instance="node1")))
    assert kinds(decide(world, ReceiveAlert(mk("B", instance="node1")), S)) == [
        "IncidentOpened",
        "AlertFired",
    ]


def test_link_and_unlink_by_hand() -> None:
    world = World(policy=GroupingPolicy(group_by=("alertname",)))
    for i, name in enumerate(("A", "B", "C")):
        decide(world, ReceiveAlert(mk(name, instance=f"h{i}")), i * S)
    a, b, c = (incident_of(world, n) for n in "ABC")
    events = decide(world, LinkIncidents((b, a), "alice", reason="same rack"), 5 * S)
    assert kinds(events) == ["SituationOpened", "SituationLinked"]
    (s,) = world.situations.active.values()
    assert s.lead == a  # the older incident leads
    assert s.members[b].by == "alice"
    assert s.members[b].rule == "by hand"
    assert s.members[b].reason == "same rack"
    decide(world, LinkIncidents((c,), "bob", situation_id=s.id), 6 * S)
    assert set(world.situations.active[s.id].members) == {a, b, c}
    with pytest.raises(Rejected, match="already in situation"):
        decide(world, LinkIncidents((c, b), "bob"), 7 * S)
    with pytest.raises(Rejected, match="no incident"):
        decide(world, LinkIncidents((uuid4(),), "bob", situation_id=s.id), 7 * S)
    # Unlinking the lead hands the lead to the next member.
    events = decide(world, UnlinkIncident(s.id, a, "alice", "different cause"), 8 * S)
    assert kinds(events) == ["SituationUnlinked"]
    assert world.situations.active[s.id].lead == b
    assert world.situations.of_incident(a) is None
    # Down to one member: the situation closes.
    events = decide(world, UnlinkIncident(s.id, c, "alice"), 9 * S)
    assert kinds(events) == ["SituationUnlinked", "SituationClosed"]
    assert not world.situations.active
    assert world.situations.past[s.id].state == "closed"
    with pytest.raises(Rejected, match="no open situation"):
        decide(world, UnlinkIncident(s.id, b, "alice"), 10 * S)


def test_unlinked_by_hand_stays_apart_from_correlation() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("A", instance="node1")))
    decide(world, ReceiveAlert(mk("B", instance="node1")), S)
    decide(world, ReceiveAlert(mk("C", instance="node1")), 2 * S)
    (s,) = world.situations.active.values()
    b = incident_of(world, "B")
    decide(world, UnlinkIncident(s.id, b, "alice", "not the node"), 3 * S)
    assert b in world.situations.kept_apart
    # A new incident on the host links into the situation, not with B.
    decide(world, ReceiveAlert(mk("D", instance="node1")), 4 * S)
    assert world.situations.of_incident(incident_of(world, "D")) is not None
    assert world.situations.of_incident(b) is None


def test_situation_closes_when_every_member_resolves() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("A", instance="node1")))
    decide(world, ReceiveAlert(mk("B", instance="node1")), S)
    for name in "AB":
        decide(world, ResolveIncident(incident_of(world, name), "alice"), 2 * S)
    assert "SituationClosed" in kinds(decide(world, Tick(), 3 * S))
    assert not world.situations.active
    assert not world.situations.by_incident


def test_situations_survive_a_checkpoint() -> None:
    world = World(policy=POLICY)
    decide(world, ReceiveAlert(mk("A", instance="node1")))
    decide(world, ReceiveAlert(mk("B", instance="node1")), S)
    copy = World.model_validate({**world.model_dump(mode="json"), "policy": POLICY})
    assert copy.situations == world.situations


def test_folding_the_emitted_events_rebuilds_the_situations() -> None:
    world = World(policy=POLICY)
    events: list[DomainEvent] = []
    events += decide(world, ReceiveAlert(mk("A", instance="node1")))
    events += decide(world, ReceiveAlert(mk("B", instance="node1")), S)
    events += decide(world, ReceiveAlert(mk("C", instance="node1", cluster="x")), 2 * S)
    (s,) = world.situations.active.values()
    events += decide(world, UnlinkIncident(s.id, incident_of(world, "A"), "bob"), 3 * S)
    rebuilt = World(policy=POLICY)
    for e in events:
        evolve(e, rebuilt)
    assert rebuilt.situations == world.situations
    assert rebuilt.situations.active[s.id].lead == incident_of(world, "B")
