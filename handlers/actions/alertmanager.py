"""`alertmanager_silence` actions: create a silence in Alertmanager through its API v2.

The silence's comment carries the idempotency key, so the executor first looks for a
silence it already created under the same key and does not create a second one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from daemon.actions.executor import ExecOutcome, PlanError, fill
from daemon.domain.action_model import ActionPlan
from daemon.domain.durations import format_duration, parse_duration
from daemon.domain.matchers import Matcher
from daemon.runbooks.runbook import SilenceAction


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _value(text: str) -> str:
    # Matcher values sit inside quotes; a quote or backslash in a value could change them.
    if '"' in text or "\\" in text:
        raise PlanError(f"{text!r}: quotes and backslashes are refused in silence matchers")
    return text


class AlertmanagerSilencer:
    """Creates silences in one Alertmanager."""

    kind = "alertmanager_silence"

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        max_duration: timedelta = timedelta(days=1),
        created_by: str = "watchkeeper",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_duration = max_duration
        self.created_by = created_by
        self.clock = clock or _utcnow

    def plan(self, action: SilenceAction, params: dict[str, Any]) -> ActionPlan:
        """The silence that would be created."""
        if not self.url:
            raise PlanError("no Alertmanager is configured (actions.alertmanager.url)")
        try:
            matchers = [Matcher.parse(fill(m, params, quote=_value)) for m in action.matchers]
            duration = parse_duration(fill(action.duration, params))
        except PlanError:
            raise
        except ValueError as e:
            raise PlanError(str(e)) from None
        if all(m.matches({}) for m in matchers):
            raise PlanError("the silence would match every alert; refused")
        if not timedelta(0) < duration <= self.max_duration:
            raise PlanError(
                f"duration {format_duration(duration)} is outside "
                f"0..{format_duration(self.max_duration)} (actions.alertmanager.max_duration)"
            )
        shown = [str(m) for m in matchers]
        comment = fill(action.comment, params) or f"watchkeeper action {action.id}"
        return ActionPlan(
            kind=self.kind,
            action_id=action.id,
            summary=f"silence {{{', '.join(shown)}}} for {format_duration(duration)} in {self.url}",
            targets=tuple(shown),
            spec={
                "url": self.url,
                "matchers": [
                    {
                        "name": m.name,
                        "value": m.value,
                        "isRegex": m.op in ("=~", "!~"),
                        "isEqual": m.op in ("=", "=~"),
                    }
                    for m in matchers
                ],
                "duration_seconds": duration.total_seconds(),
                "comment": comment,
            },
            timeout=self.timeout,
        )

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Create the silence once (or find the one created under this key)."""
        started = time.monotonic()
        url = str(plan.spec["url"])
        tag = f"[watchkeeper {key}]"
        now = self.clock()
        ends = now + timedelta(seconds=float(plan.spec["duration_seconds"]))
        body = {
            "matchers": plan.spec["matchers"],
            "startsAt": now.isoformat(),
            "endsAt": ends.isoformat(),
            "createdBy": self.created_by,
            "comment": f"{plan.spec['comment']} {tag}",
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                listed = await client.get(f"{url}/api/v2/silences")
                if listed.is_success:
                    for s in listed.json():
                        if tag in s.get("comment", "") and s["status"]["state"] != "expired":
                            return ExecOutcome(
                                "succeeded",
                                f"silence {s['id']} already exists for this action",
                                seconds=time.monotonic() - started,
                            )
                r = await client.post(f"{url}/api/v2/silences", json=body)
        except httpx.ConnectError as e:
            return ExecOutcome("failed", f"cannot connect to Alertmanager at {url}: {e}")
        except httpx.HTTPError as e:
            return ExecOutcome("unknown", f"{type(e).__name__} talking to {url}: {e}"[:500])
        seconds = time.monotonic() - started
        if not r.is_success:
            return ExecOutcome(
                "failed", f"Alertmanager answered {r.status_code}: {r.text[:300]}", r.text, seconds
            )
        sid = r.json().get("silenceID", "?")
        return ExecOutcome(
            "succeeded",
            f"silence {sid} created until {ends.isoformat(timespec='seconds')}",
            r.text,
            seconds,
        )
