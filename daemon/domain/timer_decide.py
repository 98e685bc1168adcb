"""`decide` and `evolve` for deadlines: set once, fire once when due, or cancel while pending."""

from __future__ import annotations

from datetime import datetime

from daemon.domain.commands import Rejected
from daemon.domain.decide import _decide, emit_one
from daemon.domain.events import DomainEvent, first_of, next_of
from daemon.domain.evolve import evolve
from daemon.domain.state import World
from daemon.domain.timer_model import (
    FINISHED_KEPT,
    CancelDeadline,
    Deadline,
    DeadlineCancelled,
    DeadlineFired,
    DeadlineSet,
    FireDeadline,
    SetDeadline,
)


@_decide.register(SetDeadline)
def _set(cmd: SetDeadline, world: World, now: datetime) -> list[DomainEvent]:
    book = world.deadlines
    if cmd.deadline_id in book.pending:
        raise Rejected(f"deadline {cmd.deadline_id} is already set")
    if cmd.deadline_id in book.finished:
        raise Rejected(f"deadline {cmd.deadline_id} already {book.finished[cmd.deadline_id]}")
    if not cmd.kind:
        raise Rejected("a deadline needs a kind", 422)
    event = DeadlineSet(
        **first_of(cmd.deadline_id, now),
        kind=cmd.kind,
        due_at=cmd.due_at,
        subjects=cmd.subjects,
        payload=cmd.payload,
    )
    return emit_one(world, event)


@_decide.register(FireDeadline)
def _fire(cmd: FireDeadline, world: World, now: datetime) -> list[DomainEvent]:
    d = world.deadlines.pending.get(cmd.deadline_id)
    if d is None:
        done = world.deadlines.finished.get(cmd.deadline_id)
        raise Rejected(
            f"deadline {cmd.deadline_id} already {done}"
            if done
            else f"no deadline {cmd.deadline_id}",
            409 if done else 404,
        )
    if now < d.due_at:
        raise Rejected(f"deadline {d.id} is not due until {d.due_at.isoformat()}")
    event = DeadlineFired(
        **next_of(d, now),
        kind=d.kind,
        due_at=d.due_at,
        subjects=d.subjects,
        payload=d.payload,
    )
    return emit_one(world, event)


@_decide.register(CancelDeadline)
def _cancel(cmd: CancelDeadline, world: World, now: datetime) -> list[DomainEvent]:
    d = world.deadlines.pending.get(cmd.deadline_id)
    if d is None:
        raise Rejected(f"deadline {cmd.deadline_id} is not pending", 404)
    event = DeadlineCancelled(
        **next_of(d, now),
        kind=d.kind,
        subjects=d.subjects,
        reason=cmd.reason,
    )
    return emit_one(world, event)


@evolve.register(DeadlineSet)
def _(event: DeadlineSet, world: World) -> None:
    world.deadlines.pending[event.originator_id] = Deadline(
        id=event.originator_id,
        version=event.originator_version,
        kind=event.kind,
        due_at=event.due_at,
        subjects=event.subjects,
        payload=event.payload,
        set_at=event.timestamp,
    )


def _finish(world: World, event: DomainEvent, how: str) -> None:
    book = world.deadlines
    book.pending.pop(event.originator_id, None)
    book.finished[event.originator_id] = how
    while len(book.finished) > FINISHED_KEPT:
        del book.finished[next(iter(book.finished))]


@evolve.register(DeadlineFired)
def _(event: DeadlineFired, world: World) -> None:
    _finish(world, event, "fired")


@evolve.register(DeadlineCancelled)
def _(event: DeadlineCancelled, world: World) -> None:
    _finish(world, event, "cancelled")
