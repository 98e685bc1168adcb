"""Alerts as watchkeeper sees them, whatever source they came from."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

AlertStatus = Literal["firing", "resolved"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """Return Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted name/value pairs).

    Using the same function as Alertmanager means an alert that reaches us both from
    Prometheus directly and through an Alertmanager webhook is recognised as one alert.
    """
    pairs = tuple(sorted(labels.items()))
    fp = _CACHE.get(pairs)
    if fp is None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        fp = _CACHE[pairs] = _fingerprint(pairs)
    return fp


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = 0xFFFFFFFFFFFFFFFF


def fnv1a_64_py(data: bytes) -> int:
    """FNV-1a 64 in Python: the reference, and the fallback where the C one cannot load."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


def _load_fnv1a_64() -> Callable[[bytes], int]:
    """FNV-1a 64 in C (the fnv-c package), or the Python reference if it cannot be loaded.

    Called through `ctypes.PyDLL` (the C function declared in fnv-c's `fnv.h`), which keeps
    the GIL: fnv-c's own cffi wrapper releases it on every call, and while the writer thread
    is busy each release costs a GIL hand-over (139 µs a call measured, against 1.6 µs here
    and ~10 µs for the byte loop in Python).
    """
    try:
        from fnv_c.ext import _fnv

        fn = ctypes.PyDLL(_fnv.__file__).fnv1a_64
    except (ImportError, OSError, AttributeError):
        return fnv1a_64_py
    fn.restype = ctypes.c_uint64
    fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t)

    def fnv1a_64(data: bytes) -> int:
        return int(fn(data, len(data)))

    return fnv1a_64


fnv1a_64 = _load_fnv1a_64()


# Memoized: sources re-send the same label sets on every evaluation. A dict emptied when
# full rather than an LRU: with a stream of distinct label sets the LRU's eviction per miss
# cost more than the hash itself (4.8 µs against 2.7 µs uncached per alert).
_CACHE: dict[tuple[tuple[str, str], ...], str] = {}
_CACHE_SIZE = 65_536


def _fingerprint(pairs: tuple[tuple[str, str], ...]) -> str:
    # name 0xff value 0xff ..., built with one join (0.4 µs less than concatenating per pair).
    data = b"\xff".join([s.encode() for pair in pairs for s in pair]) + b"\xff" if pairs else b""
    return f"{fnv1a_64(data):016x}"


class Alert(BaseModel):
    """A normalized alert: identity (fingerprint, labels), content, and its lease (`ends_at`)."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    status: AlertStatus = "firing"
    starts_at: datetime
    # The lease: an alert not renewed by this time resolves. None means the source
    # announces resolution itself (Alertmanager webhooks).
    ends_at: datetime | None = None
    generator_url: str = ""
    source: str = ""
    value: float | None = None

    @property
    def name(self) -> str:
        """The alertname label."""
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        """The severity label, or "none"."""
        return self.labels.get("severity", "none")
