"""Run an argv without a shell: a fixed environment, a timeout, capped output, its own session.

A process that outlives its timeout is killed with its whole process group, and the outcome
is reported as unknown: it may have done part of its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from daemon.actions.executor import ExecOutcome

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C.UTF-8"}


async def _read_capped(
    stream: asyncio.StreamReader, cap: int, drain: bool = True
) -> tuple[bytes, bool]:
    """Read to EOF (or, without `drain`, until past `cap`), keeping the first `cap` bytes."""
    buf = bytearray()
    dropped = False
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(buf), dropped
        room = cap - len(buf)
        if room > 0:
            buf += chunk[:room]
        dropped = dropped or len(chunk) > room
        if dropped and not drain:
            return bytes(buf), dropped


async def discard(stream: asyncio.StreamReader) -> None:
    """Read a stream to EOF, keeping nothing."""
    while await stream.read(65536):
        pass


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_argv(
    argv: list[str],
    timeout: float,  # noqa: ASYNC109 - enforced here with wait_for, then the group is killed
    output_bytes: int,
    env: dict[str, str],
    *,
    drain: bool = True,
) -> ExecOutcome:
    """Run `argv` once and report its outcome (exit 0 succeeded, else failed; timeout unknown).

    Without `drain` (diagnostics) a command whose output passes the cap is killed there.
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**BASE_ENV, **env},
            start_new_session=True,
        )
    except OSError as e:
        return ExecOutcome("failed", f"{argv[0]}: cannot run: {e.strerror}")
    assert proc.stdout is not None
    try:
        out, dropped = await asyncio.wait_for(
            _read_capped(proc.stdout, output_bytes, drain), timeout
        )
        left = max(timeout - (time.monotonic() - started), 1)
        if dropped and not drain:
            _kill_group(proc)  # enough output: stop it rather than wait for its timeout
            # wait() returns only once stdout is at EOF too, and the reader stopped (paused
            # at its buffer limit): read what the killed command left in the pipe.
            await asyncio.wait_for(discard(proc.stdout), left)
        code = await asyncio.wait_for(proc.wait(), left)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return ExecOutcome(
            "unknown",
            f"timed out after {timeout:.0f}s and was killed; it may have done part of its work",
            seconds=time.monotonic() - started,
        )
    except asyncio.CancelledError:
        # Shutting down mid-action: leave it to finish; its outcome is recorded as unknown.
        raise
    text = out.decode("utf-8", "replace") + ("\n[output truncated]" if dropped else "")
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1][:200] if lines else "no output"
    seconds = time.monotonic() - started
    if code == 0:
        return ExecOutcome("succeeded", f"exited 0: {last}", text, seconds, 0)
    return ExecOutcome("failed", f"exited {code}: {last}", text, seconds, code)
