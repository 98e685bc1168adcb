"""Durable deadlines (pure rules as tables) and the escalation steps a policy walks through."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.domain import GroupingPolicy, Rejected, World, decide
from daemon.domain.escalation import (
    EscalationLevel,
    EscalationPolicy,
    Step,
    first_step,
    next_step,
    select_policy,
    stop_reason,
)
from daemon.domain.matchers import Matcher
from daemon.domain.state import Incident
from daemon.domain.timer_model import (
    CancelDeadline,
    DeadlineFired,
    DeadlineSet,
    FireDeadline,
    SetDeadline,
    deadline_id,
)
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog
from daemon.engine.timers import TimerService

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
D = deadline_id("test", 1)


def _set(w: World, due: datetime = T0 + timedelta(minutes=5)) -> None:
    decide(w, SetDeadline(D, "test", due, payload={"n": 1}), T0)


@pytest.mark.parametrize(
    ("steps", "refusal"),
    [
        (["set", "set"], f"deadline {D} is already set"),
        (["fire_early"], f"no deadline {D}"),
        (["set", "fire_early"], f"deadline {D} is not due until 2026-03-01T12:05:00+00:00"),
        (["set", "fire", "fire"], f"deadline {D} already fired"),
        (["set", "fire", "set"], f"deadline {D} already fired"),
        (["set", "cancel", "fire"], f"deadline {D} already cancelled"),
        (["set", "fire", "cancel"], f"deadline {D} is not pending"),
    ],
)
def test_a_deadline_is_set_once_and_fires_or_is_cancelled_once(
    steps: list[str], refusal: str
) -> None:
    w = World()
    *ok, last = steps
    actions = {
        "set": lambda: _set(w),
        "fire": lambda: decide(w, FireDeadline(D), T0 + timedelta(minutes=5)),
        "fire_early": lambda: decide(w, FireDeadline(D), T0 + timedelta(minutes=4)),
        "cancel": lambda: decide(w, CancelDeadline(D, "no longer needed"), T0),
    }
    for s in ok:
        actions[s]()
    with pytest.raises(Rejected) as e:
        actions[last]()
    assert e.value.reason == refusal


def test_fired_deadline_carries_what_it_was_set_with() -> None:
    w = World()
    _set(w)
    [ev] = decide(w, FireDeadline(D), T0 + timedelta(minutes=7))
    assert isinstance(ev, DeadlineFired)
    assert (ev.kind, ev.due_at, ev.payload, ev.originator_version) == (
        "test",
        T0 + timedelta(minutes=5),
        {"n": 1},
        2,
    )
    assert w.deadlines.pending == {}
    assert w.deadlines.finished == {D: "fired"}


def test_world_with_deadlines_survives_a_checkpoint_round_trip() -> None:
    w = World()
    _set(w)
    other = deadline_id("test", 2)
    decide(w, SetDeadline(other, "test", T0), T0)
    decide(w, CancelDeadline(other, "x"), T0)
    back = World.model_validate(w.model_dump(mode="json"))
    assert back.deadlines == w.deadlines


LEVELS = (
    EscalationLevel(channels=("a",), repeat=2, repeat_every=timedelta(minutes=5)),
    EscalationLevel(channels=("b",), delay=timedelta(minutes=15)),
    EscalationLevel(channels=("c",), delay=timedelta(minutes=30), repeat=1),
)
POLICY = EscalationPolicy(name="p", levels=LEVELS)


def test_steps_walk_levels_and_repeats_in_order() -> None:
    step = first_step(POLICY)
    walk = [step]
    while (nxt := next_step(POLICY, walk[-1].level, walk[-1].round)) is not None:
        walk.append(nxt)
    m = timedelta(minutes=1)
    assert walk == [
        Step(level=0, round=0, wait=0 * m),
        Step(level=0, round=1, wait=5 * m),
        Step(level=0, round=2, wait=5 * m),
        Step(level=1, round=0, wait=15 * m),
        Step(level=2, round=0, wait=30 * m),
        Step(level=2, round=1, wait=30 * m),  # repeat_every defaults to the level's delay
    ]


def test_the_first_matching_policy_is_chosen() -> None:
    crit = EscalationPolicy(
        name="crit", matchers=(Matcher.parse('severity="critical"'),), levels=LEVELS
    )
    rest = EscalationPolicy(name="rest", levels=LEVELS)
    assert select_policy([crit, rest], {"severity": "critical"}) == crit
    assert select_policy([crit, rest], {"severity": "warning"}) == rest
    assert select_policy([crit], {"severity": "warning"}) is None


def _inc(state: str, by: str = "") -> Incident:
    return Incident(
        id=D,
        version=1,
        group_key="{}",
        group_labels={},
        state=state,  # type: ignore[arg-type]
        opened_at=T0,
        updated_at=T0,
        acknowledged_by=by,
    )


@pytest.mark.parametrize(
    ("stop_on", "incident", "reason"),
    [
        (("acknowledged", "resolved"), _inc("open"), None),
        (("acknowledged", "resolved"), _inc("acknowledged", "alice"), "acknowledged by alice"),
        (("resolved",), _inc("acknowledged", "alice"), None),
        (("acknowledged", "resolved"), _inc("resolved"), "incident resolved"),
        (("acknowledged",), _inc("resolved"), None),
        ((), None, "incident is closed"),
    ],
)
def test_stop_conditions(
    stop_on: tuple[str, ...], incident: Incident | None, reason: str | None
) -> None:
    assert stop_reason(stop_on, incident) == reason


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_timer_service_fires_when_the_clock_reaches_the_deadline(tmp_path: Path) -> None:
    clock = Clock()
    log = EventLog(f"sqlite:///{tmp_path / 'e.db'}")
    ing = Ingestor(log, GroupingPolicy(), clock)
    await ing.start()
    timers = TimerService(ing, clock, max_idle=0.02)
    await timers.start()
    try:
        await ing.submit([SetDeadline(D, "test", T0 + timedelta(minutes=5))])
        await asyncio.sleep(0.1)
        assert timers.fired == 0
        clock.now = T0 + timedelta(minutes=5)
        timers.poke()
        for _ in range(500):
            if timers.fired:
                break
            await asyncio.sleep(0.01)
        # Two more passes at the same moment: nothing fires twice.
        assert await timers.fire_due() == []
        assert await asyncio.gather(timers.fire_due(), timers.fire_due()) == [[], []]
        kinds = [type(r.event) for r in log.read(0, 100)]
        assert kinds == [DeadlineSet, DeadlineFired]
        assert timers.fired == 1
    finally:
        await timers.close()
        await ing.close()
        log.close()
