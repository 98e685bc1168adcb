"""Targets resolved to hosts, and the transports that reach them.

`HostRouter.resolve` turns an action's target (a name from the alert's labels or the
runbook) into an inventory host and the transport that reaches it, or raises `TargetError`
saying why not: not in the inventory, `local` asked for another machine, no SSH key or
known_hosts configured. Nothing falls back to another host: an action either runs on its
target, through that target's transport, or does not run.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from typing import Literal, Protocol

from daemon.actions.executor import ExecOutcome
from daemon.config.inventory import Inventory, InventoryHost
from daemon.domain.action_model import ActionPlan

Missing = Literal["this_host", "refuse"]
# Kinds whose plan is a command on a host; http, webhook and silences name their own URL.
HOST_KINDS = frozenset({"shell", "systemd"})


class TargetError(ValueError):
    """The target cannot be acted on; the message says why."""


class Transport(Protocol):
    """Runs an argv on a host: `local` (this machine) or `ssh`."""

    @property
    def name(self) -> str:
        """`local` or `ssh`."""

    def problem(self, host: InventoryHost) -> str | None:
        """Why this transport cannot reach `host` at all (configuration), or None."""

    async def probe(self, host: InventoryHost) -> str | None:
        """Why `host` cannot be reached now (a connection attempt), or None."""

    async def run(
        self,
        host: InventoryHost,
        argv: list[str],
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - the transport enforces it and kills the command
        output_bytes: int,
        *,
        drain: bool = True,
    ) -> ExecOutcome:
        """Run once: `failed` with nothing run if it could not start; `unknown` if cut off.

        With `drain` false (read-only diagnostics) the command is killed once its output
        passes `output_bytes`, rather than left to run to its timeout.
        """

    async def close(self) -> None:
        """Close pooled connections."""


def remote_command(argv: list[str], env: Mapping[str, str], timeout: float) -> str:
    """One line for the remote shell: `timeout -s KILL T env -- K=V … argv`, each quoted.

    The remote `timeout` bounds the command on the host itself: it dies at its timeout even
    if the connection is gone or sshd refuses signal requests (it does for root sessions).
    """
    if "=" in argv[0]:
        raise TargetError(f"{argv[0]!r} would be read by env as a variable; refused")
    assigns = [f"{k}={v}" for k, v in sorted(env.items())]
    limit = str(max(1, math.ceil(timeout)))
    return shlex.join(["timeout", "-s", "KILL", limit, "env", "--", *assigns, *argv])


class HostRouter:
    """This host's identity, the inventory, and a transport per kind of connection."""

    def __init__(
        self,
        this_host: str,
        aliases: frozenset[str],
        inventory: Inventory,
        transports: Mapping[str, Transport],
        missing: Missing = "this_host",
    ) -> None:
        self.this_host = this_host
        self.names = frozenset({this_host.lower(), *aliases})
        self.inventory = inventory
        self.transports = dict(transports)
        self.missing = missing

    def reload(
        self, this_host: str, aliases: frozenset[str], inventory: Inventory, missing: Missing
    ) -> None:
        """Take a re-read config (SIGHUP); plans made before are re-resolved at dispatch."""
        self.this_host = this_host
        self.names = frozenset({this_host.lower(), *aliases})
        self.inventory = inventory
        self.missing = missing

    def is_this_host(self, name: str) -> bool:
        """Whether `name` is one of this machine's names."""
        return name.strip().lower() in self.names

    def resolve(self, target: str, why: str = "") -> InventoryHost:
        """The host for a target, with a usable transport; TargetError saying why not."""
        if not target:
            if self.missing == "refuse":
                raise TargetError(f"no target host ({why or 'no label names one'}); refused")
            target = self.this_host
        if self.is_this_host(target):
            listed = self.inventory.find(target)
            labels = listed.labels if listed else {}
            host = InventoryHost(
                name=self.this_host, address="localhost", connection="local", labels=labels
            )
        else:
            found = self.inventory.find(target)
            if found is None:
                if not self.inventory.source:
                    raise TargetError(
                        f"target {target} is not this host and no inventory is configured "
                        "(inventory.file)"
                    )
                raise TargetError(
                    f"target {target} is not in the inventory ({self.inventory.source})"
                )
            host = found
        transport = self.transports.get(host.connection)
        if transport is None:
            raise TargetError(f"no {host.connection} transport is configured for {host.name}")
        problem = transport.problem(host)
        if problem:
            raise TargetError(f"{host.connection} cannot reach {host.name}: {problem}")
        return host

    def place(self, plan: ActionPlan, target: str, why: str = "") -> ActionPlan:
        """The plan bound to its target host (for a command) or naming it (for a URL)."""
        if plan.kind not in HOST_KINDS:
            return plan.model_copy(update={"host": target})
        host = self.resolve(target, why)
        spec = dict(plan.spec)
        if plan.kind == "systemd" and host.become and host.connection == "ssh":
            spec["argv"] = ["sudo", "-n", *spec["argv"]]
        address = f"{host.user + '@' if host.user else ''}{host.address}:{host.port}"
        return plan.model_copy(
            update={
                "host": host.name,
                "transport": host.connection,
                "address": "" if host.connection == "local" else address,
                "spec": spec,
            }
        )

    def _host_of(self, plan: ActionPlan) -> InventoryHost:
        host = self.resolve(plan.host or self.this_host)
        if host.connection != (plan.transport or "local"):
            raise TargetError(
                f"{plan.host} is now reached by {host.connection}, not {plan.transport}"
            )
        return host

    async def probe(self, plan: ActionPlan) -> str | None:
        """Why the plan's host cannot be reached now, or None (the drift check asks)."""
        if plan.kind not in HOST_KINDS:
            return None
        try:
            host = self._host_of(plan)
        except TargetError as e:
            return str(e)
        return await self.transports[host.connection].probe(host)

    async def run(
        self,
        plan: ActionPlan,
        argv: list[str],
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - passed to the transport, which enforces it
        output_bytes: int,
    ) -> ExecOutcome:
        """Run on the plan's host through its transport; refuse (failed, nothing ran) if not."""
        try:
            host = self._host_of(plan)
        except TargetError as e:
            return ExecOutcome("failed", f"not run: {e}")
        return await self.transports[host.connection].run(host, argv, env, timeout, output_bytes)

    async def run_on(
        self,
        target: str,
        argv: list[str],
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - passed to the transport, which enforces it
        output_bytes: int,
    ) -> tuple[str, ExecOutcome]:
        """A read-only command on a target (diagnostics): the host's name and the outcome."""
        host = self.resolve(target)
        transport = self.transports[host.connection]
        out = await transport.run(host, argv, env, timeout, output_bytes, drain=False)
        return host.name, out

    async def close(self) -> None:
        """Close every transport's connections."""
        for t in self.transports.values():
            await t.close()
