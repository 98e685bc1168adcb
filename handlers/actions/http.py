"""`http` and `webhook` actions: a request to an allowlisted host, with an idempotency key.

`http` calls an API (a deploy system, a feature flag) with the runbook's method, URL and
JSON body. `webhook` hands the whole action to an external runner (StackStorm, Rundeck, a
chat-ops bot) as one signed JSON document. Values are URL-quoted in URLs and keep their
JSON type in bodies. A request that timed out may have been received: its outcome is unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from daemon.actions.executor import (
    ExecOutcome,
    PlanError,
    dot_segment,
    fill,
    fill_typed,
)
from daemon.config.actions import host_allowed
from daemon.domain.action_model import ActionPlan
from daemon.runbooks.runbook import HttpAction, WebhookAction

OUTPUT_BYTES = 4096


def _url(template: str, params: dict[str, Any], allow_hosts: list[str], setting: str) -> str:
    url = fill(template, params, quote=lambda v: quote(v, safe=""))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PlanError(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise PlanError("credentials in the URL are refused; use a header or a secret")
    if dot_segment(parts.path):
        raise PlanError(f"{parts.path!r} has a '.' or '..' segment; refused")
    if not host_allowed(parts.hostname, parts.port, allow_hosts):
        allowed = ", ".join(allow_hosts) or "none"
        raise PlanError(f"host {parts.netloc} is not in {setting} (allowed: {allowed})")
    return url


def _target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path or '/'}"


async def _send(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,  # noqa: ASYNC109 - passed to httpx, which enforces it
) -> ExecOutcome:
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            r = await client.request(method, url, content=body, headers=headers)
    except httpx.ConnectError as e:
        return ExecOutcome("failed", f"cannot connect to {urlsplit(url).netloc}: {e}")
    except httpx.HTTPError as e:
        # Sent, perhaps received: whether it took effect is not known.
        return ExecOutcome(
            "unknown", f"{type(e).__name__} after sending {method} {url}: {e}"[:500]
        )
    seconds = time.monotonic() - started
    text = r.text[:OUTPUT_BYTES]
    if r.is_success:
        return ExecOutcome("succeeded", f"HTTP {r.status_code}", text, seconds)
    return ExecOutcome("failed", f"HTTP {r.status_code}: {text[:300]}", text, seconds)


class HttpExecutor:
    """Calls allowlisted HTTP APIs."""

    kind = "http"

    def __init__(self, allow_hosts: list[str], timeout: float) -> None:
        self.allow_hosts = allow_hosts
        self.timeout = timeout

    def plan(self, action: HttpAction, params: dict[str, Any]) -> ActionPlan:
        """The request that would be sent."""
        url = _url(action.url, params, self.allow_hosts, "actions.http.allow_hosts")
        body = fill_typed(action.body, params) if action.body else None
        shown = f"{action.method} {url}" + (f" {json.dumps(body, sort_keys=True)}" if body else "")
        return ActionPlan(
            kind=self.kind,
            action_id=action.id,
            summary=shown,
            targets=(_target(url),),
            spec={"method": action.method, "url": url, "body": body},
            timeout=self.timeout,
        )

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Send the request once, with `Idempotency-Key`."""
        url = str(plan.spec["url"])
        if not host_allowed(urlsplit(url).hostname or "", urlsplit(url).port, self.allow_hosts):
            return ExecOutcome("failed", f"{url} is no longer allowlisted; not sent")
        body = plan.spec.get("body")
        headers = {"Idempotency-Key": key, "User-Agent": "watchkeeper"}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return await _send(str(plan.spec["method"]), url, content, headers, self.timeout)


class WebhookRunner:
    """Hands actions to an external runner over a signed JSON webhook."""

    kind = "webhook"

    def __init__(self, allow_hosts: list[str], timeout: float, secret: str = "") -> None:
        self.allow_hosts = allow_hosts
        self.timeout = timeout
        self.secret = secret

    def plan(self, action: WebhookAction, params: dict[str, Any]) -> ActionPlan:
        """The hand-over that would be posted."""
        url = _url(action.url, params, self.allow_hosts, "actions.http.allow_hosts")
        payload = fill_typed(action.payload, params)
        return ActionPlan(
            kind=self.kind,
            action_id=action.id,
            summary=f"POST {url} {json.dumps(payload, sort_keys=True)}",
            targets=(_target(url),),
            spec={"url": url, "payload": payload},
            timeout=self.timeout,
        )

    async def execute(self, plan: ActionPlan, key: str) -> ExecOutcome:
        """Post the hand-over once; the runner answers 2xx when it accepted it."""
        url = str(plan.spec["url"])
        if not host_allowed(urlsplit(url).hostname or "", urlsplit(url).port, self.allow_hosts):
            return ExecOutcome("failed", f"{url} is no longer allowlisted; not sent")
        doc = {"action": plan.action_id, "idempotency_key": key, "payload": plan.spec["payload"]}
        body = json.dumps(doc, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "User-Agent": "watchkeeper",
        }
        if self.secret:
            mac = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Watchkeeper-Signature"] = f"sha256={mac}"
        return await _send("POST", url, body, headers, self.timeout)
