"""State serialized in a forked child, so a checkpoint costs the event loop a fork, not a dump.

A checkpoint is the whole world as JSON, about 2.5 µs per alert it holds, and the GIL lets
one thread run at a time: written on the event loop, a growing world's checkpoints were a
fifth of ingest time while the host's second core sat idle. `fork()` gives a child a
copy-on-write view of the world exactly as committed; the child serializes and compresses
it and hands the bytes back through a pipe, and the parent's writer thread stores them (one
writer, as ever). Redis saves its snapshots the same way (BGSAVE).

The child runs only the render function, zlib and `os.write`, then `os._exit`: no event
loop, no logging, no atexit handlers, no collector. It first puts the signals back to their
defaults, so a signal meant for it cannot reach the parent's event loop through the wakeup
fd they share, and it dies with the parent (PR_SET_PDEATHSIG), so a kill -9 leaves no orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import struct
import sys
import zlib
from collections.abc import Callable

_HEADER = struct.Struct("!Q")  # the uncompressed size, ahead of the compressed bytes
_PR_SET_PDEATHSIG = 1
_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")


class SnapshotFailed(Exception):  # noqa: N818 - reads as a condition
    """The child did not deliver a snapshot (it failed, was killed, or could not start)."""


def available() -> bool:
    """Whether snapshots can be taken in a child here (fork exists: Linux and other POSIX)."""
    return hasattr(os, "fork") and sys.platform != "emscripten"


class Snapshot:
    """A child process rendering state; `await result()` gives (raw size, zlib bytes)."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self._reaped = False

    @classmethod
    def fork(cls, render: Callable[[], bytes], level: int = 1) -> Snapshot:
        """Fork now: the child renders the state as it is at this instant.

        Raises `OSError` when the system cannot fork (no memory for page tables, process
        limit); the caller can then render in-process instead.
        """
        r, w = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            raise
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(r)
            _child(render, w, parent, level)
        os.close(w)
        return cls(pid, r)

    async def result(self) -> tuple[int, bytes]:
        """Wait for the child's bytes and its exit; raises `SnapshotFailed` if it failed.

        Cancelling kills the child.
        """
        try:
            data = await _read_all(self.fd)
            status = await asyncio.to_thread(self._wait)
        except BaseException:
            self.kill()
            raise
        if status != 0 or len(data) < _HEADER.size:
            raise SnapshotFailed(f"snapshot child {self.pid} {_exit_reason(status)}")
        (size,) = _HEADER.unpack_from(data)
        return size, data[_HEADER.size :]

    def kill(self) -> None:
        """Stop the child at once and reap it (idempotent)."""
        if self._reaped:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait()

    def _wait(self) -> int:
        if self._reaped:
            return -int(signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0xFF00  # reaped elsewhere: report as a failed exit
        self._reaped = True
        return os.waitstatus_to_exitcode(status)


async def _read_all(fd: int) -> bytes:
    """Everything the child writes, until it closes its end (read by the event loop)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**31, loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    try:
        return await reader.read()
    finally:
        transport.close()


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code} (its reason is in the daemon's stderr/journal)"


def _child(render: Callable[[], bytes], w: int, parent: int, level: int) -> None:
    """In the child: render, compress, write, exit. Never returns."""
    code = 1
    try:
        # Before anything else: a signal for this process must kill it, not be relayed to
        # the parent through the wakeup fd its asyncio loop set up.
        for name in _SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        _die_with_parent()
        _first_to_go()
        if os.getppid() != parent:
            os._exit(1)  # the parent died before the death signal was armed
        gc.disable()  # a collection would touch (and so copy) every page of the heap
        raw = render()
        blob = zlib.compress(raw, level)
        _write_all(w, _HEADER.pack(len(raw)))
        _write_all(w, blob)
        code = 0
    except BaseException as e:  # anything at all: report it and exit non-zero
        with contextlib.suppress(Exception):
            os.write(2, f"watchkeeper snapshot child failed: {e!r}\n".encode())
    finally:
        os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _first_to_go() -> None:
    """Make this process the OOM killer's first choice, before the daemon that forked it.

    Reference counting writes to every object the render visits, so the child ends up with
    private copies of most of the world's pages (about 1.5 KB per alert held, JSON
    included): near a cgroup's MemoryMax, the child is the one to lose.
    """
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (best effort elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
