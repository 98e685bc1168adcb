"""The `local` transport: today's subprocess, but only for a target that is this host.

The guard is here as well as in the router: whatever asks, `local` never runs a command
meant for another machine on this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon.actions.executor import ExecOutcome
from daemon.config.inventory import InventoryHost
from handlers.actions.process import run_argv


class LocalTransport:
    """Runs an argv on this machine, if the host is this machine."""

    name = "local"

    def __init__(self, is_this_host: Callable[[str], bool], this_host: Callable[[], str]) -> None:
        self.is_this_host = is_this_host
        self.this_host = this_host

    def problem(self, host: InventoryHost) -> str | None:
        """The ops-host guard: refuse any host that is not this one."""
        if self.is_this_host(host.name):
            return None
        return (
            f"the local transport runs only on this host ({self.this_host()}), "
            f"and {host.name} is another machine"
        )

    async def probe(self, host: InventoryHost) -> str | None:
        """This host is always reachable; another never is, by this transport."""
        return self.problem(host)

    async def run(
        self,
        host: InventoryHost,
        argv: list[str],
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - run_argv enforces it
        output_bytes: int,
        *,
        drain: bool = True,
    ) -> ExecOutcome:
        """Run here once, or refuse without running."""
        problem = self.problem(host)
        if problem:
            return ExecOutcome("failed", f"not run: {problem}")
        return await run_argv(argv, timeout, output_bytes, dict(env), drain=drain)

    async def close(self) -> None:
        """Nothing pooled."""
