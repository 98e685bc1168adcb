"""`shell` actions: an argv from the runbook, each element filled on its own, never a shell.

Only programs on the executable allowlist run (compared by absolute path). No argv
element may come to start with `-` through a parameter (it would be read as an option),
and no parameter value may hold a `.` or `..` path segment (`/var/log/{x}` stays there).
A list parameter that makes up a whole element becomes one element per item, each a target.
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

from daemon.actions.executor import (
    PARAM,
    ExecOutcome,
    PlanError,
    dot_segment,
    fill,
    scalar,
    used_params,
)
from daemon.actions.hosts import HostRouter
from daemon.domain.action_model import ActionPlan
from daemon.domain.durations import parse_duration
from daemon.runbooks.runbook import ShellAction
from handlers.actions.process import run_argv


def _no_climbing(element: str, values: list[str]) -> None:
    """Refuse a value with a `..` or `.` path segment ("/var/log/{x}", x="../../etc/shadow")."""
    for value in values:
        if dot_segment(value):
            raise PlanError(
                f"a value for {element!r} has a '.' or '..' path segment ({value!r}); refused"
            )


class ShellExecutor:
    """Runs allowlisted programs with the runbook's argv."""

    kind = "shell"

    def __init__(
        self,
        allow: list[str],
        timeout: float,
        output_bytes: int,
        hosts: HostRouter | None = None,
    ) -> None:
        self.allow = {os.path.normpath(p) for p in allow}
        self.timeout = timeout
        self.output_bytes = output_bytes
        self.hosts = hosts

    def plan(self, action: ShellAction, params: dict[str, Any]) -> ActionPlan:
        """The argv that would run."""
        if PARAM.search(action.argv[0]):
            raise PlanError("argv[0] must be a fixed program, not a parameter")
        argv: list[str] = []
        targets: list[str] = []
        for element in action.argv:
            whole = PARAM.fullmatch(element)
            if whole is None:
                filled = fill(element, params)
                used = used_params(element, params)
                if filled.startswith("-") and not element.startswith("-"):
                    # "{params.x}@prod" with x="--force" is an option all the same.
                    raise PlanError(
                        f"argv element {element!r} would start with '-' once filled and be "
                        "read as an option by argv[0]; refused"
                    )
                _no_climbing(element, used)
                argv.append(filled)
                targets += used
                continue
            name = whole.group(1)
            value = params.get(name)
            if name not in params:
                raise PlanError(f"needs params.{name}, which was not given")
            for item in value if isinstance(value, list) else [value]:
                text = scalar(name, item)
                if text.startswith("-"):
                    raise PlanError(
                        f"params.{name}={text!r} would be read as an option by argv[0]; refused"
                    )
                _no_climbing(element, [text])
                argv.append(text)
                targets.append(text)
        program = argv[0]
        resolved = program if os.path.isabs(program) else shutil.which(program)
        if resolved is None:
            raise PlanError(f"{program} is not on PATH")
        resolved = os.path.normpath(resolved)
        if resolved not in self.allow:
            allowed = ", ".join(sorted(self.allow)) or "none"
            raise PlanError(
                f"{resolved} is not in actions.shell.allow (allowed programs: {allowed})"
            )
        argv[0] = resolved
        timeout = min(parse_duration(action.timeout).total_seconds(), self.timeout)
        return ActionPlan(
            kind=self.kind,
            action_id=action.id,
            summary=shlex.join(argv),
            targets=tuple(targets) or ("localhost",),
            spec={"argv": argv},
            timeout=timeout,
        )

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Run the argv once."""
        argv = [str(a) for a in plan.spec["argv"]]
        if argv[0] not in self.allow:
            return ExecOutcome("failed", f"{argv[0]} is no longer in actions.shell.allow; not run")
        env = {"WATCHKEEPER_IDEMPOTENCY_KEY": key, "WATCHKEEPER_ACTION": plan.action_id}
        if self.hosts is None:
            return await run_argv(argv, plan.timeout, self.output_bytes, env)
        return await self.hosts.run(plan, argv, env, plan.timeout, self.output_bytes)
