"""The composition root: the one module that knows which handlers exist and builds them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from daemon.config import Settings
from daemon.ingest import Ingestor
from daemon.store import EventLog


def build_ingestor(settings: Settings, log: EventLog, clock: Callable[[], datetime]) -> Ingestor:
    """The Ingestor configured from settings."""
    return Ingestor(
        log,
        settings.grouping.policy(),
        clock,
        max_batch=settings.tuning.max_batch,
        checkpoint_every=settings.tuning.checkpoint_every,
        dead_letters_kept=settings.tuning.dead_letters_kept,
    )
