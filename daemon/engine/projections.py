"""Read models folded from the log next to the world: what the API shows besides incidents."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from pydantic import BaseModel

from daemon.domain.events import DeadLetterRecorded, DomainEvent


class DeadLetterView(BaseModel):
    """One rejected input as the API and CLI show it."""

    id: str
    position: int
    at: str
    source: str
    reason: str
    size: int
    payload: str
    truncated: bool = False


class Projections:
    """Bounded read models: recent dead letters and event counts by kind."""

    def __init__(self, dead_letters_kept: int = 1000) -> None:
        self.dead_letters: deque[DeadLetterView] = deque(maxlen=dead_letters_kept)
        self.event_counts: Counter[str] = Counter()

    def apply(self, position: int, event: DomainEvent) -> None:
        """Fold one committed event."""
        self.event_counts[type(event).__name__] += 1
        if isinstance(event, DeadLetterRecorded):
            self.dead_letters.append(
                DeadLetterView(
                    id=str(event.originator_id),
                    position=position,
                    at=event.timestamp.isoformat(),
                    source=event.source,
                    reason=event.reason,
                    size=event.size,
                    payload=event.payload,
                    truncated=event.truncated,
                )
            )

    def to_checkpoint(self) -> dict[str, Any]:
        """Serializable state for a checkpoint."""
        return {
            "dead_letters": [d.model_dump() for d in self.dead_letters],
            "event_counts": dict(self.event_counts),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load state saved by `to_checkpoint`."""
        self.dead_letters.clear()
        self.dead_letters.extend(DeadLetterView(**d) for d in data.get("dead_letters", []))
        self.event_counts = Counter(data.get("event_counts", {}))
