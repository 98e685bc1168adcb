"""Process memory hygiene for a daemon that runs for days: allocator and collector settings.

Measured in `bench/soak.py` and `bench/kafka_ingest.py` (see the README's "Running for days"):

- glibc raises its mmap threshold each time a large block is freed, so after the first
  checkpoint (a world serialised to a few MB) big temporary buffers land on the brk heap and
  pin it: `[heap]` grew 26 → 34 MB over five simulated days while live Python objects stayed
  flat. A fixed threshold keeps large buffers in their own mappings, returned on free, and a
  periodic full collection plus `malloc_trim` hands back what requests and tasks left.
- The cyclic collector's default young-generation threshold (700 allocations) makes it walk
  the young objects every few alerts; at ingest rates that was a third of the CPU per alert.
  The world is built from frozen, acyclic models, so collecting rarely costs little memory,
  and freezing what the start-up rebuild allocated keeps full collections from re-walking it.

Everything here is best effort: on a libc without these calls it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("watchkeeper.memory")

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's initial default, kept fixed from now on


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim")):
        return None  # not glibc (musl has neither tunable)
    return lib


_LIBC = _libc()


def configure(gc_threshold: int) -> None:
    """Fix the allocator's mmap threshold and set the collector's young-generation threshold."""
    if _LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; heap growth may show in RSS")
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gc_threshold, gen1, gen2)


def settle() -> None:
    """After the start-up rebuild: collect once, then freeze the survivors.

    Frozen objects are never walked by the collector again; the rebuilt world is most of
    the heap, and nearly all of it is replaced by evolve (freed by reference counting) or
    lives as long as the process.
    """
    gc.collect()
    gc.freeze()
    trim()


def trim() -> bool:
    """Give freed heap memory back to the OS (glibc `malloc_trim`); whether any was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def tidy() -> None:
    """Periodic upkeep: a full collection (cyclic garbage from requests and tasks would
    otherwise wait for the collector's own, rare, full pass), then `trim`."""
    gc.collect()
    trim()

