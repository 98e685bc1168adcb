"""Large tool outputs, stored once by content hash in the event store's own database.

A blob lives in the `blobs` table of the same SQLite file or PostgreSQL database as the
event log (an eventsourcing aggregate recorder), so backups of the store carry it. The
event that uses it records only the hash; storing the same content again is a no-op.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.persistence import AggregateRecorder, IntegrityError, StoredEvent

from daemon.engine.store import EventLog

_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/blobs")
BLOB_TOPIC = "watchkeeper:blob"


def blob_id(digest: str) -> UUID:
    """The row id of a blob with this sha256."""
    return uuid5(_NS, digest)


def encode(data: Any) -> bytes:
    """Canonical JSON bytes of a tool's data (what gets hashed)."""
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":")).encode()


class BlobStore:
    """Content-addressed storage for tool outputs; writes go through the store's writer thread."""

    def __init__(self, log: EventLog, writer: Executor, cache_size: int = 256) -> None:
        self.recorder: AggregateRecorder = log.factory.aggregate_recorder("blobs")
        self.writer = writer
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.cache_size = cache_size
        self.stored = 0

    def _put(self, digest: str, raw: bytes) -> None:
        oid = blob_id(digest)
        if self.recorder.select_events(oid, limit=1):
            return
        try:
            self.recorder.insert_events([StoredEvent(oid, 1, BLOB_TOPIC, zlib.compress(raw, 6))])
            self.stored += 1
        except IntegrityError:
            pass  # another writer stored the same content first

    async def put(self, data: Any) -> tuple[str, int]:
        """Store data (if new); return its sha256 and size in bytes."""
        raw = encode(data)
        digest = hashlib.sha256(raw).hexdigest()
        await asyncio.get_running_loop().run_in_executor(self.writer, self._put, digest, raw)
        self._remember(digest, data)
        return digest, len(raw)

    def _remember(self, digest: str, data: Any) -> None:
        self._cache[digest] = data
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def get(self, digest: str) -> Any:
        """The data stored under a hash, or None (blocking read; cached)."""
        if digest in self._cache:
            return self._cache[digest]
        rows = self.recorder.select_events(blob_id(digest), limit=1)
        if not rows:
            return None
        data = json.loads(zlib.decompress(rows[0].state))
        self._remember(digest, data)
        return data

    def cached(self, digest: str) -> Any:
        """The data if it is in memory (for building prompts without blocking)."""
        return self._cache.get(digest)
