"""The `actions:` section of the config: policy (mode, risk tiers, limits, windows) and executors.

Executors are allowlists first: the shell executor runs only listed programs, the HTTP and
webhook executors reach only listed hosts, the systemd executor touches only listed units.
An action whose plan falls outside them is refused by policy with the reason.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from daemon.config.types import Duration, Matchers, Section
from daemon.domain.matchers import Matcher
from daemon.domain.policy import (
    DAY_NAMES,
    Effect,
    LabelMode,
    Mode,
    PolicyRules,
    RateLimit,
    Risk,
    RunbookPolicy,
    Window,
)

_UNIT = re.compile(r"^[A-Za-z0-9@_.:*?\[\]-]+$")


class RunbookOverride(Section):
    """A runbook's own mode and auto-run risk tiers."""

    mode: Mode | None = None
    auto_risks: list[Risk] | None = None


class RateLimitConfig(Section):
    """At most `max` runs per target of matching actions within `per`."""

    action: str = "*"
    kind: str = "*"
    max: int = Field(ge=0)
    per: Duration
    scope: Literal["target", "host", "fleet"] = "target"


class LabelModeConfig(Section):
    """A mode for matching labels (the alert's, and the target host's inventory vars)."""

    matchers: list[str] = Field(min_length=1)
    mode: Mode

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        for m in v:
            Matcher.parse(m)
        return v


class WindowConfig(Section):
    """A maintenance window or change freeze (absolute, or weekly with days/start/end)."""

    name: str = Field(min_length=1)
    effect: Effect = "block"
    matchers: Matchers = []
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    days: list[str] = []
    start: time | None = None
    end: time | None = None
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d.lower()[:3] not in DAY_NAMES]
        if bad:
            raise ValueError(f"unknown days {bad}; use mon, tue, wed, thu, fri, sat, sun")
        return v

    def window(self) -> Window:
        """The domain's value (raises ValueError when the shape is wrong)."""
        return Window(
            name=self.name,
            effect=self.effect,
            matchers=tuple(Matcher.parse(m) for m in self.matchers),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            days=tuple(DAY_NAMES.index(d.lower()[:3]) for d in self.days),
            start=self.start,
            end=self.end,
            timezone=self.timezone,
        )


class ShellConfig(Section):
    """The shell executor: which programs may run, for how long, how much output is kept."""

    allow: list[str] = Field(default_factory=list, description="absolute program paths")
    timeout: Duration = timedelta(minutes=5)
    output_bytes: int = Field(default=16_384, ge=256)

    @field_validator("allow")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not Path(p).is_absolute()]
        if bad:
            raise ValueError(f"programs must be absolute paths: {', '.join(bad)}")
        return v


class HttpConfig(Section):
    """The http and webhook executors: which hosts they may call."""

    allow_hosts: list[str] = Field(default_factory=list, description="host or host:port globs")
    timeout: Duration = timedelta(seconds=30)
    # Signs webhook hand-overs (X-Watchkeeper-Signature: sha256=HMAC of the body).
    webhook_secret: str | None = None


class SystemdConfig(Section):
    """The systemd executor: `systemctl <operation> <unit>` for allowlisted units only."""

    units: list[str] = []
    # reset-failed is allowed (runbooks use it) but, like the rest, only when listed.
    operations: list[
        Literal["start", "stop", "restart", "reload", "try-restart", "reset-failed"]
    ] = [
        "start",
        "stop",
        "restart",
        "reload",
    ]
    systemctl: str = "/usr/bin/systemctl"
    timeout: Duration = timedelta(seconds=90)

    @field_validator("units")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not _UNIT.match(u) or "." not in u]
        if bad:
            raise ValueError(f"not unit names (name.service, globs allowed): {', '.join(bad)}")
        return v


class AlertmanagerConfig(Section):
    """The alertmanager_silence executor: which Alertmanager, and the longest silence."""

    url: str = ""
    timeout: Duration = timedelta(seconds=10)
    max_duration: Duration = timedelta(days=1)
    created_by: str = "watchkeeper"


class ActionsConfig(Section):
    """Policy and executors for proposed actions."""

    mode: Mode = "review"
    auto_risks: list[Risk] = ["low"]
    runbooks: dict[str, RunbookOverride] = {}
    approvals_required: dict[Risk, int] = {}
    approval_timeout: Duration = timedelta(minutes=30)
    approval_reminder: Duration = timedelta(minutes=10)
    rate_limits: list[RateLimitConfig] = []
    max_targets: int = Field(default=10, ge=1)
    windows: list[WindowConfig] = []
    # e.g. [{matchers: ['env="prod"'], mode: review}]: the strictest matching mode wins.
    label_modes: list[LabelModeConfig] = []
    # How often the verify check is evaluated inside the runbook's window.
    verify_interval: Duration = timedelta(seconds=15)
    # Where the precondition and verify queries go (default: agent.tools.prometheus_url).
    prometheus_url: str = ""
    shell: ShellConfig = ShellConfig()
    http: HttpConfig = HttpConfig()
    systemd: SystemdConfig = SystemdConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()

    @field_validator("approvals_required")
    @classmethod
    def _approvals(cls, v: dict[Risk, int]) -> dict[Risk, int]:
        bad = {k: n for k, n in v.items() if not 1 <= n <= 5}
        if bad:
            raise ValueError(f"approvals must be between 1 and 5, got {bad}")
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[WindowConfig]) -> list[WindowConfig]:
        for i, w in enumerate(v):
            try:
                w.window()
            except ValueError as e:
                raise ValueError(f"windows[{i}] ({w.name}): {e}") from None
        return v

    def rules(self) -> PolicyRules:
        """The pure policy's rules."""
        return PolicyRules(
            mode=self.mode,
            auto_risks=tuple(self.auto_risks),
            runbooks={
                rid: RunbookPolicy(
                    mode=o.mode,
                    auto_risks=tuple(o.auto_risks) if o.auto_risks is not None else None,
                )
                for rid, o in self.runbooks.items()
            },
            approvals_required=dict(self.approvals_required),
            approval_timeout=self.approval_timeout,
            reminder_before=self.approval_reminder,
            rate_limits=tuple(
                RateLimit(action=r.action, kind=r.kind, max=r.max, per=r.per, scope=r.scope)
                for r in self.rate_limits
            ),
            max_targets=self.max_targets,
            windows=tuple(w.window() for w in self.windows),
            label_modes=tuple(
                LabelMode(matchers=tuple(Matcher.parse(m) for m in lm.matchers), mode=lm.mode)
                for lm in self.label_modes
            ),
        )

    def secret_refs(self) -> dict[str, str]:
        """Secret references by config path, for `Settings.secrets_problems`."""
        return {"actions.http.webhook_secret": self.http.webhook_secret} if (
            self.http.webhook_secret
        ) else {}


def host_allowed(host: str, port: int | None, patterns: list[str]) -> bool:
    """Whether `host[:port]` matches one of the allowlisted host globs."""
    host = host.lower().strip("[]")
    with_port = f"{host}:{port}" if port else host
    for pattern in patterns:
        p = pattern.lower()
        if ":" in p and not _is_v6(p):
            if fnmatch.fnmatchcase(with_port, p):
                return True
        elif fnmatch.fnmatchcase(host, p.strip("[]")):
            return True
    return False


def _is_v6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text.strip("[]")), ipaddress.IPv6Address)
    except ValueError:
        return False
