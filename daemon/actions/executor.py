"""The ActionExecutor protocol and the parameter filling every executor shares.

An executor does two things. `plan` turns a runbook action and its validated parameters
into an `ActionPlan` — exactly what would run (argv, URL, unit) and what it acts on — or
raises `PlanError` saying why it may not (a program, host or unit outside the allowlist).
`execute` performs a plan once, under an idempotency key, and reports the outcome. Plans
are pure, so observe mode and `watchkeeper actions dry-run` show them without running.

`{params.X}` is filled per element: an argv element, a URL component, a JSON value. A value
never passes through a shell, and a JSON value that is exactly one placeholder keeps its
type (an integer stays an integer).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import unquote

from daemon.domain.action_model import ActionPlan
from daemon.runbooks.runbook import (
    HttpAction,
    ShellAction,
    SilenceAction,
    SystemdAction,
    WebhookAction,
)

RunbookAction = ShellAction | HttpAction | SystemdAction | SilenceAction | WebhookAction
PARAM = re.compile(r"\{params\.([A-Za-z_][A-Za-z0-9_]*)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PlanError(ValueError):
    """The action cannot be run as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class ExecOutcome:
    """What happened when a plan ran."""

    outcome: Literal["succeeded", "failed", "unknown"]
    detail: str
    output: str = ""
    seconds: float = 0.0
    # The command's exit status, when it ran to the end.
    exit_code: int | None = None


class ActionExecutor(Protocol):
    """Runs one kind of runbook action (shell, http, systemd, alertmanager_silence, webhook)."""

    @property
    def kind(self) -> str:
        """The runbook action kind this executor runs."""

    def plan(self, action: Any, params: dict[str, Any]) -> ActionPlan:
        """Exactly what would run; raise PlanError when it may not."""

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Run the plan once; never raise for an expected failure (return it)."""


def scalar(name: str, value: Any) -> str:
    """A parameter value as text for an argv element or a URL; refuse what is not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value)
        if _CONTROL.search(text):
            raise PlanError(f"params.{name} contains control characters")
        return text
    raise PlanError(f"params.{name} must be a string or number here, not {type(value).__name__}")


def dot_segment(path: str) -> bool:
    """Whether a path has a `.` or `..` segment, percent-encoded or not (it could climb out)."""
    return any(seg in (".", "..") for seg in unquote(path).replace("\\", "/").split("/"))


def _lookup(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise PlanError(f"needs params.{name}, which was not given")
    return params[name]


def fill(template: str, params: dict[str, Any], quote: Callable[[str], str] | None = None) -> str:
    """`template` with every `{params.X}` replaced by its value as text (quoted, if asked)."""

    def sub(m: re.Match[str]) -> str:
        text = scalar(m.group(1), _lookup(params, m.group(1)))
        return quote(text) if quote else text

    return PARAM.sub(sub, template)


def fill_typed(value: Any, params: dict[str, Any]) -> Any:
    """Fill a JSON-like value; a string that is exactly one placeholder keeps the value's type."""
    if isinstance(value, str):
        m = PARAM.fullmatch(value)
        if m:
            return _lookup(params, m.group(1))
        return fill(value, params)
    if isinstance(value, list):
        return [fill_typed(v, params) for v in value]
    if isinstance(value, dict):
        return {k: fill_typed(v, params) for k, v in value.items()}
    return value


def used_params(template: str, params: dict[str, Any]) -> list[str]:
    """The values of the parameters a template uses, as text (what the action acts on)."""
    return [scalar(m.group(1), _lookup(params, m.group(1))) for m in PARAM.finditer(template)]
