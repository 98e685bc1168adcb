"""Stored event names: a log written before the move loads after it, and schemas can evolve."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

import daemon.domain
from daemon.domain import registry
from daemon.domain.events import DeadLetterRecorded, DomainEvent
from daemon.domain.state import GroupingPolicy, World
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-0.1.0" / "events.db"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _all_event_classes() -> Iterator[type[DomainEvent]]:
    todo = list(DomainEvent.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not cls.__name__.startswith("_") and cls.__module__.startswith("daemon."):
            yield cls


def test_every_event_type_has_one_stable_name() -> None:
    assert daemon.domain  # every aggregate module is imported
    classes = set(_all_event_classes())
    assert classes == set(registry.BY_CLASS), "register new events in daemon/domain/registry.py"
    assert len(registry.BY_NAME) == len(registry.TYPES), "a stored name is used twice"
    for kind in registry.TYPES:
        assert ":" not in kind.name
        assert "." not in kind.name
        assert "@" not in kind.name
        # every older version can be upcast to the current one
        for v in range(1, kind.version):
            assert (kind.name, v) in registry.UPCASTERS


def test_topics_are_names_not_python_paths(tmp_path: Path) -> None:
    log = EventLog(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        event = DeadLetterRecorded(
            originator_id=uuid4(),
            originator_version=1,
            timestamp=NOW,
            source="http",
            reason="r",
            payload="x",
            size=1,
        )
        log.append([event])
        [(_, topic, *_rest)] = log.read_raw()
        assert topic == "DeadLetterRecorded@2"
        [rec] = log.read()
        assert rec.event == event
    finally:
        log.close()


def test_legacy_python_path_topics_resolve() -> None:
    kind, version = registry.parse_topic("daemon.domain.events:IncidentOpened")
    assert (kind.name, version) == ("IncidentOpened", 1)
    kind, version = registry.parse_topic("daemon.domain.rule_events:RuleFiring")
    assert kind.name == "RuleFiring"
    with pytest.raises(registry.UnknownEventType, match="not a known event type"):
        registry.parse_topic("somewhere.else:IncidentOpened")
    with pytest.raises(registry.UnknownEventType, match="newer watchkeeper"):
        registry.parse_topic("IncidentOpened@99")
    assert registry.event_name("daemon.domain.action_events:ActionApproved") == "ActionApproved"
    assert registry.event_name("DeadLetterRecorded@2") == "DeadLetterRecorded"


def test_upcaster_fills_the_field_a_new_version_gained() -> None:
    """DeadLetterRecorded v2 gained `truncated`; v1 records get it derived from their data."""
    base = {
        "originator_id": str(uuid4()),
        "originator_version": 1,
        "timestamp": NOW.isoformat(),
        "source": "http",
        "reason": "bad",
    }
    cut = {**base, "payload": "abc", "size": 4096}
    whole = {**base, "payload": "abc", "size": 3}
    for topic in ("DeadLetterRecorded", "daemon.domain.events:DeadLetterRecorded"):
        event = registry.decode(topic, json.dumps(cut).encode())
        assert isinstance(event, DeadLetterRecorded)
        assert event.truncated is True
        event = registry.decode(topic, json.dumps(whole).encode())
        assert isinstance(event, DeadLetterRecorded)
        assert event.truncated is False
    # the current version is read as it is, without an upcast
    event = registry.decode(
        "DeadLetterRecorded@2", json.dumps({**cut, "truncated": False}).encode()
    )
    assert isinstance(event, DeadLetterRecorded)
    assert event.truncated is False


async def _rebuild(db: Path) -> Ingestor:
    ing = Ingestor(
        EventLog(f"sqlite:///{db}"),
        GroupingPolicy(group_by=("alertname", "instance")),
        lambda: NOW,
        checkpoint_in_child=False,
    )
    await ing.start()
    return ing


def _summary(world: World) -> dict[str, object]:
    incidents = {**world.closed, **world.incidents}
    return {
        "incidents": {
            str(i.id): (i.state, i.group_key, i.acknowledged_by, i.alerts_total, i.version)
            for i in incidents.values()
        },
        "actions": {
            str(a.id): (a.status, a.action_id, tuple(x.by for x in a.approvals), a.verification)
            for a in [*world.actions.past.values(), *world.actions.active.values()]
        },
        "silences": {
            str(s.id): (tuple(m.model_dump_json() for m in s.matchers), s.created_by, s.comment)
            for s in world.silences.values()
        },
        "position": world.position,
    }


async def test_store_written_before_the_move_rebuilds_the_same_state(tmp_path: Path) -> None:
    with_checkpoint = tmp_path / "with-checkpoint.db"
    log_only = tmp_path / "log-only.db"
    shutil.copy(FIXTURE, with_checkpoint)
    shutil.copy(FIXTURE, log_only)
    with sqlite3.connect(log_only) as db:
        topics = {t for (t,) in db.execute("SELECT topic FROM stored_snapshots")}
        assert topics == {"watchkeeper:checkpoint"}  # the pre-registry checkpoint format
        db.execute("DELETE FROM stored_snapshots")
    with sqlite3.connect(with_checkpoint) as db:
        stored = [t for (t,) in db.execute("SELECT topic FROM stored_events")]
    assert stored
    assert all(t.startswith("daemon.domain.") for t in stored)

    from_checkpoint = await _rebuild(with_checkpoint)
    from_log = await _rebuild(log_only)
    try:
        assert from_checkpoint._checkpointed_at > 0  # the old checkpoint was loaded
        assert from_log._checkpointed_at == 0
        a, b = _summary(from_checkpoint.world), _summary(from_log.world)
        assert a == b

        # What the demo did, as it was recorded.
        [incident] = a["incidents"].values()  # type: ignore[attr-defined]
        state, group_key, acked_by, alerts_total, _version = incident
        assert state in ("resolved", "closed")
        assert 'alertname="DemoDiskFilling"' in group_key
        assert acked_by == "local"
        assert alerts_total == 1
        [action] = a["actions"].values()  # type: ignore[attr-defined]
        assert action[0] == "verified"
        assert action[1] == "clean_tmp"
        assert action[2] == ("local",)
        [silence] = a["silences"].values()  # type: ignore[attr-defined]
        assert "NeverFires" in silence[0][0]
        assert silence[2] == "fixture silence"

        # Every stored event decodes, old topics and all, and dead letters are upcast.
        events = from_log.log.read(0, 10_000)
        assert len(events) == len(stored)
        dead = [r.event for r in events if isinstance(r.event, DeadLetterRecorded)]
        assert dead
        assert all(d.truncated is False for d in dead)
        assert len(from_log.projections.dead_letters) == len(dead)
    finally:
        await from_checkpoint.close()
        await from_log.close()

    # A checkpoint the new code writes is in the registered format and loads again.
    again = await _rebuild(with_checkpoint)
    try:
        assert _summary(again.world) == a
    finally:
        await again.close()
    with sqlite3.connect(with_checkpoint) as db:
        newest = db.execute(
            "SELECT topic FROM stored_snapshots ORDER BY originator_version DESC LIMIT 1"
        ).fetchone()
    assert newest is None or newest[0] in registry.CHECKPOINT_FORMATS
