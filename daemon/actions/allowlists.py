"""Which runbook actions the `actions:` allowlists would refuse, found before any incident.

`watchkeeper config check` asks this so a runbook action that can never run (a program
missing from `actions.shell.allow`, a unit outside `actions.systemd.units`) is reported with
the line to add, instead of being proposed, approved and then refused at dispatch. What
depends on an action's parameters (a unit or host filled from `{params.X}`) is checked at
dispatch, as before.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from urllib.parse import urlsplit

from daemon.config.actions import ActionsConfig, host_allowed
from daemon.runbooks.runbook import (
    HttpAction,
    RunbookLibrary,
    ShellAction,
    SilenceAction,
    SystemdAction,
    WebhookAction,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A runbook action the allowlists would refuse: why, and the config that allows it."""

    runbook: str
    action: str
    reason: str
    fix: str

    def line(self) -> str:
        """One line for `config check`."""
        return f"runbook {self.runbook} action {self.action}: {self.reason}; add {self.fix}"


def _templated(text: str) -> bool:
    return "{params." in text or "{labels." in text


def refusals(runbooks: RunbookLibrary, cfg: ActionsConfig) -> list[Refusal]:
    """Every action of every runbook that the executors' allowlists would refuse."""
    out: list[Refusal] = []
    for rb in runbooks.runbooks.values():
        for action in rb.actions:
            reason_fix = _check(action, cfg)
            if reason_fix is not None:
                out.append(Refusal(rb.id, action.id, *reason_fix))
    return out


def _check(action: object, cfg: ActionsConfig) -> tuple[str, str] | None:
    if isinstance(action, ShellAction):
        program = action.argv[0]
        if _templated(program):
            return None
        resolved = program if os.path.isabs(program) else shutil.which(program)
        if resolved is None:
            return (f"{program} is not on PATH", "its absolute path to actions.shell.allow")
        resolved = os.path.normpath(resolved)
        if resolved not in {os.path.normpath(p) for p in cfg.shell.allow}:
            return (
                f"{resolved} is not in actions.shell.allow",
                f'"{resolved}" to actions.shell.allow',
            )
    elif isinstance(action, SystemdAction):
        if action.operation not in cfg.systemd.operations:
            return (
                f"operation {action.operation} is not in actions.systemd.operations",
                f"{action.operation} to actions.systemd.operations",
            )
        if not _templated(action.unit) and not any(
            fnmatch.fnmatchcase(action.unit, u) for u in cfg.systemd.units
        ):
            return (
                f"{action.unit} is not in actions.systemd.units",
                f'"{action.unit}" to actions.systemd.units',
            )
    elif isinstance(action, HttpAction | WebhookAction):
        parts = urlsplit(action.url)
        host = parts.hostname or ""
        if host and not _templated(parts.netloc) and not host_allowed(
            host, parts.port, cfg.http.allow_hosts
        ):
            where = f"{host}:{parts.port}" if parts.port else host
            return (
                f"{where} is not in actions.http.allow_hosts",
                f'"{where}" to actions.http.allow_hosts',
            )
    elif isinstance(action, SilenceAction) and not cfg.alertmanager.url:
        return (
            "no Alertmanager is configured for silences",
            "actions.alertmanager.url (e.g. http://127.0.0.1:9093)",
        )
    return None
