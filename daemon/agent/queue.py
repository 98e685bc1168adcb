"""Investigations waiting for a worker: situations first (a lead or a lone incident before
any member of a situation), then most severe, then oldest incident."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from daemon.domain.state import SEVERITY_RANK


@dataclass(order=True)
class _Entry:
    member: bool
    rank: int
    opened_at: float
    seq: int
    investigation_id: UUID = field(compare=False)
    severity: str = field(compare=False)
    runbook_id: str = field(compare=False)
    incident_id: UUID = field(compare=False)
    queued_at: float = field(compare=False)


class InvestigationQueue:
    """A priority queue of investigation ids; each id is queued at most once."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._ids: set[UUID] = set()
        self._seq = itertools.count()
        self._ready = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, investigation_id: object) -> bool:
        return investigation_id in self._ids

    async def put(
        self,
        investigation_id: UUID,
        *,
        severity: str,
        incident_opened_at: datetime,
        runbook_id: str,
        incident_id: UUID,
        now: float,
        member: bool = False,
    ) -> None:
        """Queue an investigation (no-op if it is queued already)."""
        if investigation_id in self._ids:
            return
        self._ids.add(investigation_id)
        heapq.heappush(
            self._heap,
            _Entry(
                member,
                -SEVERITY_RANK.get(severity, 0),
                incident_opened_at.timestamp(),
                next(self._seq),
                investigation_id,
                severity,
                runbook_id,
                incident_id,
                now,
            ),
        )
        async with self._ready:
            self._ready.notify()

    async def get(self) -> UUID:
        """The most urgent queued investigation (waits while the queue is empty)."""
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._heap))
            entry = heapq.heappop(self._heap)
        self._ids.discard(entry.investigation_id)
        return entry.investigation_id

    def snapshot(self, now: float, limit: int = 20) -> dict[str, Any]:
        """Sizes by severity, the oldest wait, and the first `limit` entries in order."""
        ordered = sorted(self._heap)
        by_sev: dict[str, int] = {}
        for e in ordered:
            by_sev[e.severity] = by_sev.get(e.severity, 0) + 1
        return {
            "length": len(ordered),
            "by_severity": by_sev,
            "oldest_wait_seconds": round(max((now - e.queued_at for e in ordered), default=0.0), 1),
            "next": [
                {
                    "investigation": str(e.investigation_id),
                    "incident": str(e.incident_id),
                    "severity": e.severity,
                    "runbook": e.runbook_id,
                    "waiting_seconds": round(now - e.queued_at, 1),
                }
                for e in ordered[:limit]
            ],
        }
