"""Tables for what people do to an incident: note, assign/take, unacknowledge, snooze, reopen,
change severity. Each is an event with who, when and the channel; refusals say why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from domainkit import T0, mk

from daemon.domain import (
    Acknowledge,
    ReceiveAlert,
    Rejected,
    ResolveIncident,
    World,
    decide,
    evolve,
)
from daemon.domain.events import DomainEvent
from daemon.domain.incident_work import (
    AssignIncident,
    ChangeSeverity,
    LinkIncident,
    NoteIncident,
    ReopenIncident,
    SnoozeIncident,
    UnacknowledgeIncident,
)
from daemon.domain.registry import decode, topic_of

M = timedelta(minutes=1)


def _open(world: World) -> UUID:
    decide(world, ReceiveAlert(mk(severity="warning")), T0)
    return next(iter(world.incidents))


def _acked(world: World) -> UUID:
    iid = _open(world)
    decide(world, Acknowledge(iid, "alice"), T0)
    return iid


def _resolved(world: World) -> UUID:
    iid = _open(world)
    decide(world, ReceiveAlert(mk(severity="warning", status="resolved", ends=T0)), T0)
    return iid


Case = tuple[str, Callable[[World], UUID], Callable[[UUID], Any], list[str], dict[str, Any]]
CASES: list[Case] = [
    (
        "note",
        _open,
        lambda i: NoteIncident(i, "bob", "  looking at disk  ", "console"),
        ["IncidentNoted"],
        {"notes": 1},
    ),
    (
        "take",
        _open,
        lambda i: AssignIncident(i, "bob", "bob", "cli"),
        ["IncidentAssigned"],
        {"assignee": "bob"},
    ),
    (
        "unacknowledge",
        _acked,
        lambda i: UnacknowledgeIncident(i, "alice", "handing over"),
        ["IncidentUnacknowledged"],
        {"state": "open", "acknowledged_by": ""},
    ),
    (
        "snooze",
        _open,
        lambda i: SnoozeIncident(i, "bob", T0 + 30 * M, "deploy running"),
        ["IncidentSnoozed"],
        {"snoozed_until": T0 + 30 * M, "state": "open"},
    ),
    (
        "reopen",
        _resolved,
        lambda i: ReopenIncident(i, "carol", "came back on web2"),
        ["IncidentReopened"],
        {"state": "open", "reopen_count": 1, "resolved_at": None},
    ),
    (
        "severity",
        _open,
        lambda i: ChangeSeverity(i, "carol", "critical", "customers see errors"),
        ["IncidentSeverityChanged"],
        {"severity": "critical"},
    ),
]


@pytest.mark.parametrize(
    ("setup", "command", "kinds", "state"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verbs_record_who_when_and_where(
    setup: Callable[[World], UUID],
    command: Callable[[UUID], Any],
    kinds: list[str],
    state: dict[str, Any],
) -> None:
    world = World()
    iid = setup(world)
    before = world.incidents[iid].version
    cmd = command(iid)
    events = decide(world, cmd, T0 + 2 * M)
    assert [type(e).__name__ for e in events] == kinds
    [ev] = events
    assert (ev.timestamp, ev.originator_version) == (T0 + 2 * M, before + 1)
    assert (ev.by, ev.channel) == (cmd.by, cmd.channel)
    inc = world.incidents[iid]
    assert {k: getattr(inc, k) for k in state} == state
    # Stored under a registered name and read back as the same event.
    assert decode(topic_of(ev), ev.model_dump_json().encode()) == ev


def test_the_note_text_is_kept_trimmed() -> None:
    world = World()
    iid = _open(world)
    [ev] = decide(world, NoteIncident(iid, "bob", "  disk at 95%\n"), T0)
    assert ev.text == "disk at 95%"  # type: ignore[attr-defined]


REFUSALS: list[tuple[str, Callable[[World], UUID], Callable[[UUID], Any], int, str]] = [
    ("empty note", _open, lambda i: NoteIncident(i, "b", "  "), 422, "a note needs some text"),
    ("long note", _open, lambda i: NoteIncident(i, "b", "x" * 4001), 422, "at most 4000"),
    ("unack open", _open, lambda i: UnacknowledgeIncident(i, "b"), 409, "only an acknowledged"),
    ("snooze past", _open, lambda i: SnoozeIncident(i, "b", T0), 422, "in the future"),
    ("snooze resolved", _resolved, lambda i: SnoozeIncident(i, "b", T0 + M), 409, "is resolved"),
    ("reopen open", _open, lambda i: ReopenIncident(i, "b"), 409, "only a resolved one"),
    ("bad severity", _open, lambda i: ChangeSeverity(i, "b", "urgent"), 422, "must be one of"),
    ("same severity", _open, lambda i: ChangeSeverity(i, "b", "warning"), 409, "already warning"),
    ("unassign nobody", _open, lambda i: AssignIncident(i, "b", ""), 409, "has no owner"),
    ("unknown", _open, lambda i: NoteIncident(UUID(int=1), "b", "x"), 404, "closed or unknown"),
]


@pytest.mark.parametrize(
    ("setup", "command", "status", "reason"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refusals_say_why_and_change_nothing(
    setup: Callable[[World], UUID], command: Callable[[UUID], Any], status: int, reason: str
) -> None:
    world = World()
    iid = setup(world)
    before = world.model_dump()
    with pytest.raises(Rejected) as caught:
        decide(world, command(iid), T0 + M)
    assert (caught.value.status, reason in caught.value.reason) == (status, True), caught.value
    assert world.model_dump() == before


def test_a_worked_incident_rebuilds_from_its_events() -> None:
    world = World()
    events: list[DomainEvent] = []
    events += decide(world, ReceiveAlert(mk(severity="warning")), T0)
    iid = next(iter(world.incidents))
    for cmd in (
        Acknowledge(iid, "alice"),
        AssignIncident(iid, "alice", "alice"),
        NoteIncident(iid, "alice", "on it"),
        UnacknowledgeIncident(iid, "alice", "end of shift"),
        AssignIncident(iid, "bob", "bob"),
        SnoozeIncident(iid, "bob", T0 + 60 * M),
        ChangeSeverity(iid, "bob", "critical"),
        ResolveIncident(iid, "bob"),
        ReopenIncident(iid, "carol", "not fixed"),
    ):
        events += decide(world, cmd, T0 + M)
    rebuilt = World()
    for e in events:
        evolve(decode(topic_of(e), e.model_dump_json().encode()), rebuilt)
    assert rebuilt.model_dump() == world.model_dump()
    inc = world.incidents[iid]
    assert (inc.assignee, inc.notes, inc.severity, inc.state) == ("bob", 1, "critical", "open")


def test_links_point_at_another_known_incident() -> None:
    world = World()
    a = _open(world)
    decide(world, ReceiveAlert(mk("Other")), T0)
    b = next(i for i in world.incidents if i != a)
    [ev] = decide(world, LinkIncident(a, "bob", b, "same switch", "console"), T0 + M)
    assert (ev.other, ev.by, ev.channel) == (b, "bob", "console")  # type: ignore[attr-defined]
    assert world.incidents[a].links == (b,)
    for cmd, reason in (
        (LinkIncident(a, "bob", b), f"already linked to {b}"),
        (LinkIncident(a, "bob", a), "cannot be linked to itself"),
        (LinkIncident(a, "bob", UUID(int=7)), "no incident"),
    ):
        with pytest.raises(Rejected) as caught:
            decide(world, cmd, T0 + 2 * M)
        assert reason in caught.value.reason
