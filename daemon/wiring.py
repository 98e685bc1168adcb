"""The composition root: the one module that knows which handlers exist and builds them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from daemon.config import Settings
from daemon.ingest import Ingestor
from daemon.reactor import Reaction
from daemon.sources import Source
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


def build_sources(
    settings: Settings, ingestor: Ingestor, clock: Callable[[], datetime]
) -> list[Source]:
    """Every configured stream source (Kafka, MQTT, Prometheus), not yet started."""
    sources: list[Source] = []
    return sources


def build_reactions(
    settings: Settings, ingestor: Ingestor, clock: Callable[[], datetime]
) -> list[Reaction]:
    """Every reaction that follows the log (agent, policy, notifiers), not yet started."""
    reactions: list[Reaction] = []
    return reactions
