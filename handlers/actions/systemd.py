"""`systemd` actions: `systemctl <operation> -- <unit>` for allowlisted units and operations.

Pair with the polkit rule in systemd/50-watchkeeper.rules, which lets the watchkeeper user
manage exactly the same units and verbs; the two allowlists should say the same thing. On
another host the same argv runs over SSH, behind `sudo -n` when the inventory says
`ansible_become: true` (systemd/contrib/sudoers.d/watchkeeper is the matching rule).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from daemon.actions.executor import ExecOutcome, PlanError, fill
from daemon.actions.hosts import HostRouter
from daemon.domain.action_model import ActionPlan
from daemon.runbooks.runbook import SystemdAction
from handlers.actions.process import run_argv

_UNIT = re.compile(
    r"^[A-Za-z0-9@_.:\\*?\[\]-]+\.(service|socket|timer|target|path|mount|automount|swap|slice)$"
)
_GLOB = re.compile(r"[*?\[]")


class SystemdExecutor:
    """Manages allowlisted units through systemctl (polkit decides what the user may do)."""

    kind = "systemd"

    def __init__(
        self,
        units: list[str],
        operations: list[str],
        systemctl: str = "/usr/bin/systemctl",
        timeout: float = 90.0,
        output_bytes: int = 8192,
        *,
        hosts: HostRouter | None = None,
    ) -> None:
        self.hosts = hosts
        self.units = units
        self.operations = operations
        self.systemctl = systemctl
        self.timeout = timeout
        self.output_bytes = output_bytes

    def plan(self, action: SystemdAction, params: dict[str, Any]) -> ActionPlan:
        """The systemctl command that would run."""
        unit = fill(action.unit, params)
        if not _UNIT.match(unit):
            raise PlanError(f"{unit!r} is not a unit name (expected e.g. nginx.service)")
        op = action.operation
        if op not in self.operations:
            raise PlanError(
                f"operation {op} is not in actions.systemd.operations "
                f"({', '.join(self.operations)})"
            )
        # A glob is left for policy to refuse as a wildcard target, with its reason.
        if not _GLOB.search(unit) and not any(
            fnmatch.fnmatchcase(unit, u) for u in self.units
        ):
            allowed = ", ".join(self.units) or "none"
            raise PlanError(f"{unit} is not in actions.systemd.units (allowed: {allowed})")
        argv = [self.systemctl, "--no-ask-password", op, "--", unit]
        return ActionPlan(
            kind=self.kind,
            action_id=action.id,
            summary=f"systemctl {op} {unit}",
            targets=(unit,),
            spec={"argv": argv, "unit": unit, "operation": op},
            timeout=self.timeout,
            verb=op,
        )

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Run systemctl once."""
        unit, argv = str(plan.spec["unit"]), [str(a) for a in plan.spec["argv"]]
        if _GLOB.search(unit) or not any(fnmatch.fnmatchcase(unit, u) for u in self.units):
            return ExecOutcome("failed", f"{unit} is not in actions.systemd.units; not run")
        env = {"SYSTEMD_PAGER": "", "WATCHKEEPER_IDEMPOTENCY_KEY": key}
        if self.hosts is None:
            return await run_argv(argv, plan.timeout, self.output_bytes, env)
        # On another host the argv may start with `sudo -n` (ansible_become), as planned.
        return await self.hosts.run(plan, argv, env, plan.timeout, self.output_bytes)
