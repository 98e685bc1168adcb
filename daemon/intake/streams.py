"""What every stream source shares: the intake it feeds, jittered backoff, its task group.

Sources in `handlers/sources/` depend on the `Intake` protocol, not on the Ingestor, and
run their loops as named tasks of a `TaskGroup` that lives as long as the source is entered.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from eventsourcing.persistence import Tracking

from daemon.domain.backoff import Backoff
from daemon.domain.commands import Command
from daemon.domain.events import DomainEvent
from daemon.domain.state import World
from daemon.engine.store import StoreUnavailable
from daemon.intake.source import SourceHealth

__all__ = [
    "Backoff", "Intake", "SourceTasks", "StoreUnavailable", "describe", "pause_for_store"
]


class Intake(Protocol):
    """The Ingestor as a source sees it."""

    @property
    def world(self) -> World:
        """Current state (read only)."""

    async def submit(
        self, commands: Sequence[Command], tracking: Tracking | None = None
    ) -> list[DomainEvent]:
        """Decide and commit, atomically with `tracking` when given."""

    async def position(self, name: str) -> int | None:
        """The committed position recorded under `name`, or None."""


async def pause_for_store(intake: Intake, delay: float) -> None:
    """Wait up to `delay` after a refused submit, ending early once a down store is back.

    A source's backoff grows to a minute over a long outage; the store's own recovery
    says when it commits again (`Ingestor.store_available`), so intake resumes within
    half a second of that rather than at the end of the source's backoff.
    """
    first = min(delay, 0.5)
    await asyncio.sleep(first)
    available = getattr(intake, "store_available", None)
    if available is None:
        await asyncio.sleep(delay - first)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(available(), delay - first)


def describe(e: BaseException) -> str:
    """`Type: message` for health and logs (without repeating a type the message names)."""
    text, name = str(e), type(e).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class SourceTasks(ABC):
    """Base for sources: `__aenter__` starts named tasks in a TaskGroup, `__aexit__` cancels them.

    A task that raises is logged by its own loop and never takes the daemon down: the
    loops catch everything but cancellation.
    """

    name: str
    health: SourceHealth

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @abstractmethod
    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """Name suffix -> loop to run while entered."""

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for suffix, loop in self.tasks().items():
            self._tasks.append(self._group.create_task(loop(), name=f"source:{self.name}:{suffix}"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for t in self._tasks:
            t.cancel()
        group, self._group = self._group, None
        self._tasks.clear()
        self.health.connected = False
        if group is not None:
            await group.__aexit__(None, None, None)
