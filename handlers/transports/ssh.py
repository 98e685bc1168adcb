"""The `ssh` transport (asyncssh): pinned host keys, one key, bounded and reused connections.

Host keys are checked against a known_hosts file and nothing else: an unknown or changed key
is a refused connection, never trust on first use. No agent, no agent or X11 forwarding, no
ssh config files. Each host has at most `max_per_host` connections, kept for reuse while
idle. A command runs under the host's own `timeout -s KILL`, so it cannot outlive its
timeout even when the connection is gone; on our side it is also sent SIGKILL through the
channel (sshd honours that for non-root users) and the channel is closed. A failure
before the command started means nothing ran (`failed`); one after it started means it may
have run (`unknown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncssh

from daemon.actions.executor import ExecOutcome
from daemon.actions.hosts import TargetError, remote_command
from daemon.config.inventory import InventoryHost

log = logging.getLogger("watchkeeper.ssh")


@dataclass
class _Pool:
    """One host's connections: a bound on how many, and the idle ones for reuse."""

    slots: asyncio.Semaphore
    idle: list[tuple[asyncssh.SSHClientConnection, float]] = field(default_factory=list)


class SshTransport:
    """Runs an argv on an inventory host over SSH."""

    name = "ssh"

    def __init__(
        self,
        key: str | None,
        known_hosts: str | None,
        *,
        user: str = "watchkeeper",
        connect_timeout: float = 10.0,
        max_per_host: int = 2,
        idle_timeout: float = 300.0,
        keepalive: float = 30.0,
    ) -> None:
        self.key_problem = ""
        self.keys: list[asyncssh.SSHKey] = []
        if key:
            try:
                self.keys = [asyncssh.import_private_key(key)]
            except (asyncssh.KeyImportError, ValueError) as e:
                self.key_problem = f"the SSH key (inventory.ssh.key) cannot be read: {e}"
        self.known_hosts = known_hosts
        self.user = user
        self.connect_timeout = connect_timeout
        self.max_per_host = max_per_host
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive
        self.pools: dict[tuple[str, int, str], _Pool] = {}
        self.connects = 0  # connections opened (reuse shows as fewer connects than runs)

    def problem(self, host: InventoryHost) -> str | None:
        """Why no connection can be tried: no key, no known_hosts."""
        if self.key_problem:
            return self.key_problem
        if not self.keys:
            return "no SSH key is configured (inventory.ssh.key)"
        if not self.known_hosts:
            return (
                "no known_hosts file is configured (inventory.ssh.known_hosts); "
                "host keys are never trusted on first use"
            )
        return None

    def _pool(self, host: InventoryHost) -> tuple[tuple[str, int, str], _Pool]:
        key = (host.address, host.port, host.user or self.user)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool(asyncio.Semaphore(self.max_per_host))
        return key, pool

    async def _connect(self, host: InventoryHost) -> asyncssh.SSHClientConnection:
        self.connects += 1
        return await asyncssh.connect(
            host.address,
            port=host.port,
            username=host.user or self.user,
            client_keys=self.keys,
            known_hosts=self.known_hosts,
            preferred_auth="publickey",
            agent_path=None,
            agent_forwarding=False,
            x11_forwarding=False,
            config=None,
            connect_timeout=self.connect_timeout,
            login_timeout=self.connect_timeout,
            keepalive_interval=self.keepalive,
        )

    def _take_idle(self, pool: _Pool) -> asyncssh.SSHClientConnection | None:
        now = time.monotonic()
        while pool.idle:
            conn, since = pool.idle.pop()
            if not conn.is_closed() and now - since < self.idle_timeout:
                return conn
            conn.close()
        return None

    async def probe(self, host: InventoryHost) -> str | None:
        """Connect (or reuse a connection) and run nothing: why not, or None."""
        problem = self.problem(host)
        if problem:
            return problem
        _, pool = self._pool(host)
        async with pool.slots:
            conn = self._take_idle(pool)
            if conn is None:
                try:
                    conn = await self._connect(host)
                except (OSError, asyncssh.Error, TimeoutError) as e:
                    return _why(host, e)
            pool.idle.append((conn, time.monotonic()))
        return None

    async def run(
        self,
        host: InventoryHost,
        argv: list[str],
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - enforced here; the remote process is then killed
        output_bytes: int,
        *,
        drain: bool = True,
    ) -> ExecOutcome:
        """Run once on `host`; see the module docstring for what each outcome means."""
        problem = self.problem(host)
        if problem:
            return ExecOutcome("failed", f"not run: {problem}")
        try:
            command = remote_command(argv, env, timeout)
        except TargetError as e:
            return ExecOutcome("failed", f"not run: {e}")
        started = time.monotonic()
        _, pool = self._pool(host)
        async with pool.slots:
            conn, proc = None, None
            # A pooled connection may have died while idle: one fresh attempt, nothing ran yet.
            for second in (False, True):
                conn = None if second else self._take_idle(pool)
                fresh = conn is None
                try:
                    if conn is None:
                        conn = await self._connect(host)
                    proc = await conn.create_process(
                        command, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT, encoding=None
                    )
                    break
                except (OSError, asyncssh.Error, TimeoutError) as e:
                    if conn is not None:
                        conn.close()
                    if fresh:
                        return ExecOutcome(
                            "failed", f"not run: {_why(host, e)}",
                            seconds=time.monotonic() - started,
                        )
            assert conn is not None
            assert proc is not None
            outcome = await self._finish(
                host, conn, proc, timeout=timeout, cap=output_bytes, started=started,
                drain=drain,
            )
            if outcome.outcome == "unknown" or conn.is_closed():
                conn.close()
            else:
                pool.idle.append((conn, time.monotonic()))
            return outcome

    async def _finish(
        self,
        host: InventoryHost,
        conn: asyncssh.SSHClientConnection,
        proc: asyncssh.SSHClientProcess[bytes],
        *,
        timeout: float,  # noqa: ASYNC109 - enforced here
        cap: int,
        started: float,
        drain: bool,
    ) -> ExecOutcome:
        try:
            out, dropped = await asyncio.wait_for(_read_capped(proc.stdout, cap, drain), timeout)
            if dropped and not drain:
                # A diagnostic with enough output: stop it on the host, keep what we have.
                text = out.decode("utf-8", "replace") + "\n[output truncated]"
                with contextlib.suppress(OSError, asyncssh.Error):
                    proc.send_signal("KILL")
                proc.close()
                conn.close()
                return ExecOutcome(
                    "unknown", f"stopped on {host.name} after {cap} bytes of output", text,
                    time.monotonic() - started, -9,
                )
            left = max(timeout - (time.monotonic() - started), 1)
            done = await asyncio.wait_for(proc.wait(check=False), left)
        except TimeoutError:
            # Kill the remote process, not just our end of it, then drop the channel.
            with contextlib.suppress(OSError, asyncssh.Error):
                proc.send_signal("KILL")
            proc.close()
            conn.close()
            return ExecOutcome(
                "unknown",
                f"timed out on {host.name} after {timeout:.0f}s and was killed; "
                "it may have done part of its work",
                seconds=time.monotonic() - started,
            )
        except (OSError, asyncssh.Error) as e:
            return ExecOutcome(
                "unknown",
                f"the connection to {host.name} broke after the command started "
                f"({type(e).__name__}: {e}); it may have run",
                seconds=time.monotonic() - started,
            )
        seconds = time.monotonic() - started
        text = out.decode("utf-8", "replace") + ("\n[output truncated]" if dropped else "")
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1][:200] if lines else "no output"
        code = done.exit_status
        if code == 137:  # SIGKILL, e.g. by the remote `timeout`: it may have done part of it
            return ExecOutcome(
                "unknown", f"killed on {host.name} (exit 137): {last}", text, seconds
            )
        if code is None or code < 0:
            sig = done.exit_signal[0] if done.exit_signal else "?"
            return ExecOutcome(
                "unknown", f"killed by signal {sig} on {host.name}: {last}", text, seconds
            )
        if code == 0:
            return ExecOutcome("succeeded", f"exited 0 on {host.name}: {last}", text, seconds, 0)
        return ExecOutcome("failed", f"exited {code} on {host.name}: {last}", text, seconds, code)

    async def close(self) -> None:
        """Close every pooled connection."""
        for pool in self.pools.values():
            for conn, _ in pool.idle:
                conn.close()
            pool.idle.clear()


async def _read_capped(
    stream: asyncssh.SSHReader[bytes], cap: int, drain: bool
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


def _why(host: InventoryHost, e: BaseException) -> str:
    where = f"{host.name} ({host.address}:{host.port})"
    if isinstance(e, asyncssh.HostKeyNotVerifiable):
        return f"{where}: host key not verified against known_hosts: {e}"
    if isinstance(e, asyncssh.PermissionDenied):
        return f"{where}: the SSH key was refused: {e}"
    if isinstance(e, TimeoutError):
        return f"{where}: no connection within the timeout"
    return f"{where}: cannot connect: {type(e).__name__}: {e}"
