"""The Ingestor's promises about positions: refused means nothing recorded; a repeat is no error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import Tracking

from daemon.domain import Acknowledge, Rejected
from daemon.domain.state import GroupingPolicy
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_refused_command_records_no_position_and_a_repeat_position_is_harmless(
    tmp_path: Path,
) -> None:
    log = EventLog(f"sqlite:///{tmp_path}/events.db")
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    await ing.start()
    try:
        with pytest.raises(Rejected):
            await ing.submit([Acknowledge(uuid4(), "ann")], tracking=Tracking("reactor:x", 7))
        assert await ing.position("reactor:x") is None  # refused: the position was not taken
        assert await ing.submit([], tracking=Tracking("reactor:x", 7)) == []
        assert await ing.position("reactor:x") == 7
        rebuilt_before = ing.world
        # Recording the same position again (a reaction replayed after a crash) is a no-op:
        # no error for the caller, and no rebuild of the world.
        assert await ing.submit([], tracking=Tracking("reactor:x", 7)) == []
        assert await ing.submit([], tracking=Tracking("reactor:x", 3)) == []
        assert ing.world is rebuilt_before
        assert await ing.position("reactor:x") == 7
    finally:
        await ing.close()
        log.close()
