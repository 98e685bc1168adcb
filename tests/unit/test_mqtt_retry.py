"""MQTT source: a batch the event store refuses is kept and submitted again, in order.

MQTT messages are acknowledged on receipt (aiomqtt 2.x has no manual acknowledgement), so
the source itself must hold on to what the store did not take. The intake here refuses the
first submissions the way the Ingestor does when a commit fails (`StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import Tracking

from daemon.config.sources import MqttConfig
from daemon.domain.commands import Command, ReceiveAlert
from daemon.domain.events import DomainEvent
from daemon.domain.state import World
from daemon.engine.store import StoreUnavailable
from daemon.intake.streams import Backoff
from handlers.sources.mqtt import MqttSource, _Received

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class FlakyIntake:
    """Refuses the first `failures` submissions, then records every command it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.accepted: list[Command] = []
        self.world = World()

    async def submit(
        self, commands: Sequence[Command], tracking: Tracking | None = None
    ) -> list[DomainEvent]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreUnavailable("event store commit failed: disk I/O error")
        self.accepted.extend(commands)
        return []

    async def position(self, name: str) -> int | None:
        return None


def alert(i: int) -> bytes:
    return json.dumps({"labels": {"alertname": "Retry", "seq": str(i)}}).encode()


async def run_source(intake: FlakyIntake, messages: int) -> MqttSource:
    config = MqttConfig.model_validate(
        {"subscriptions": [{"filter": "alerts/#", "format": "alert"}]}
    )
    src = MqttSource(
        config,
        intake,
        lambda: NOW,
        password=None,
        resolve_timeout=timedelta(minutes=5),
        backoff=Backoff(0.01, 0.01),
    )
    src.store_backoff = Backoff(0.01, 0.02)
    for i in range(messages):
        await src._queue.put(_Received(f"alerts/{i}", alert(i), NOW))
    task = asyncio.create_task(src._submit())
    try:
        for _ in range(500):
            if len(intake.accepted) >= messages:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return src


def seqs(commands: list[Any]) -> list[str]:
    return [c.alert.labels["seq"] for c in commands if isinstance(c, ReceiveAlert)]


def test_refused_batch_is_submitted_again_in_order() -> None:
    intake = FlakyIntake(failures=3)
    src = asyncio.run(run_source(intake, 25))
    assert intake.attempts >= 4
    assert seqs(intake.accepted) == [str(i) for i in range(25)]
    assert src.health.messages == 25
    assert src.health.errors >= 3
    assert "not recorded yet" in src.health.last_error


def test_store_that_answers_at_once_is_not_retried() -> None:
    intake = FlakyIntake(failures=0)
    src = asyncio.run(run_source(intake, 5))
    assert intake.attempts == 1
    assert seqs(intake.accepted) == [str(i) for i in range(5)]
    assert src.health.errors == 0
