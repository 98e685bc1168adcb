"""Memory hygiene for days of running (daemon/memory.py) and when the supervisor applies it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from daemon.config.settings import Settings
from daemon.runtime import memory
from daemon.runtime.supervisor import Supervisor


@pytest.fixture
def gc_state() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_configure_sets_the_young_generation_threshold(gc_state: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    memory.configure(12_345)
    assert gc.get_threshold() == (12_345, gen1, gen2)


def test_settle_freezes_what_the_rebuild_left(gc_state: None) -> None:
    memory.settle()
    assert gc.get_freeze_count() > 0


def test_glibc_calls_are_found_here() -> None:
    # Debian's glibc: without these the RSS figures of bench/soak.py do not hold.
    assert memory._LIBC is not None
    assert isinstance(memory.trim(), bool)


def test_tidy_collects_cyclic_garbage() -> None:
    class Node:
        other: Node

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    gc.disable()
    try:
        memory.tidy()
        assert not [o for o in gc.get_objects() if type(o) is Node]
    finally:
        gc.enable()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(("owns", "interval", "expected"), [
    (True, "10m", 2),  # after 10 and 20 minutes of daemon time
    (True, "0s", 0),   # turned off
    (False, "10m", 0),  # a process the daemon shares (tests): left alone
])
def test_supervisor_tidies_on_daemon_time(
    monkeypatch: pytest.MonkeyPatch, gc_state: None, owns: bool, interval: str, expected: int
) -> None:
    calls: list[datetime] = []
    settled: list[datetime] = []
    clock = Clock()
    monkeypatch.setattr(memory, "tidy", lambda: calls.append(clock.now))
    monkeypatch.setattr(memory, "settle", lambda: settled.append(clock.now))
    settings = Settings(tuning={"memory_interval": interval})
    sup = Supervisor(settings, clock=clock, owns_process=owns)
    for _ in range(25):  # 25 ticks a minute apart
        sup._maybe_tidy()
        clock.now += timedelta(minutes=1)
    assert len(calls) == expected
    # The first tick settles: state is rebuilt by then, and it happens once.
    assert settled == ([datetime(2026, 1, 1, tzinfo=UTC)] if owns else [])
    if expected:
        assert calls[0] - settled[0] == calls[1] - calls[0] == timedelta(minutes=10)


def test_a_supervisor_that_owns_the_process_configures_it(gc_state: None) -> None:
    Supervisor(Settings(tuning={"gc_threshold": 23_456}), owns_process=True)
    assert gc.get_threshold()[0] == 23_456
    Supervisor(Settings(tuning={"gc_threshold": 34_567}))  # shared process: left alone
    assert gc.get_threshold()[0] == 23_456
