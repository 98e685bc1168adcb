"""End to end with the real thing: a REAL Prometheus scrapes a metric the test controls and
posts its alerts to a watchkeeper process; the incident is routed to a runbook whose
deterministic investigation queries that Prometheus and proposes a `shell` action; a person
approves it through the API; the drift check re-evaluates the runbook's precondition
against Prometheus right before dispatch; the action runs (a script appends a line to a
file, which is what repairs the metric); the verify query passes; the incident resolves.

The second story approves after the metric has already recovered (the alert keeps firing
thanks to `keep_firing_for`): the drift check cancels the action and nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from realstack import Exporter, wait_for

pytestmark = pytest.mark.integration
METRIC = "wk_app_errors"
DEADLINE = 90.0  # generous: two cores shared with other test runs

RUNBOOK = """---
id: app-errors
version: 1
title: Application errors
match:
  - alertname=~"AppBroken.*"
tools: [promql_instant, alert_context]
diagnostics:
  - id: errors
    tool: promql_instant
    args:
      query: 'wk_app_errors{{job="{{labels.job}}"}}'
    why: Whether the application still reports errors.
actions:
  - id: restart_app
    kind: shell
    title: Restart the application
    argv: ["{script}", "{{params.service}}"]
    timeout: 30s
    risk: medium
    params:
      type: object
      properties:
        service: {{type: string, pattern: '^[a-z]+$'}}
      required: [service]
      additionalProperties: false
default_action:
  action: restart_app
  params:
    service: "{{labels.service}}"
  when:
    all:
      - "errors.value > 0"
  rationale: The application reports errors; a restart clears them.
verify:
  query: 'wk_app_errors{{job="{{labels.job}}"}}'
  expect: "value == 0"
  window: 60s
evidence_max_age: 10m
---
# Application errors

Restart the application when it reports errors; it must report none within a minute.
"""


class RepairedByFile(Exporter):
    """Reports 1 error until the repair script has written its line, then 0."""

    def __init__(self, metric: str, repaired: Path) -> None:
        self.repaired = repaired
        self.forced: float | None = None
        super().__init__(metric, 1.0)

    @property  # type: ignore[override]
    def value(self) -> float:
        if self.forced is not None:
            return self.forced
        done = self.repaired.exists() and self.repaired.read_text().strip()
        return 0.0 if done else 1.0

    @value.setter
    def value(self, v: float) -> None:
        pass  # set once by Exporter.__init__; the file decides


@dataclass
class Stack:
    wk: realstack.Watchkeeper
    prom: realstack.Prometheus
    fixme: RepairedByFile
    drifty: RepairedByFile
    ran: dict[str, Path]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("actions-e2e")
    ran = {name: tmp / f"{name}.ran" for name in ("fixme", "drifty")}
    script = tmp / "restart-app"
    script.write_text(f'#!/bin/sh\necho "restarted $1" >> "{tmp}/$1.ran"\n')
    script.chmod(0o755)
    runbooks = tmp / "runbooks"
    runbooks.mkdir()
    (runbooks / "app-errors.md").write_text(RUNBOOK.format(script=script))
    fixme = RepairedByFile(METRIC, ran["fixme"])
    drifty = RepairedByFile(METRIC, ran["drifty"])
    port = realstack.free_port()
    prom_config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "fixme", "static_configs": [{"targets": [fixme.address]}]},
            {"job_name": "drifty", "static_configs": [{"targets": [drifty.address]}]},
        ],
        "alerting": {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "timeout": "5s",
                    "static_configs": [{"targets": [f"{realstack.LOOPBACK}:{port}"]}],
                }
            ]
        },
    }
    rules = {
        "groups": [
            {
                "name": "apps",
                "interval": "1s",
                "rules": [
                    {
                        "alert": "AppBroken",
                        "expr": f'{METRIC}{{job="fixme"}} > 0',
                        # One scrape missed on a loaded machine (1 s timeout) made the series
                        # stale and resolved the alert before anyone could approve.
                        "keep_firing_for": "5s",
                        "labels": {"severity": "critical", "service": "fixme"},
                        "annotations": {"summary": "fixme reports errors"},
                    },
                    {
                        "alert": "AppBrokenSticky",
                        "expr": f'{METRIC}{{job="drifty"}} > 0',
                        "keep_firing_for": "10m",
                        "labels": {"severity": "critical", "service": "drifty"},
                        "annotations": {"summary": "drifty reports errors"},
                    },
                ],
            }
        ]
    }
    try:
        prom = realstack.start_prometheus(tmp / "prom", prom_config, rules)
    except realstack.Unavailable as e:
        fixme.close()
        drifty.close()
        pytest.skip(str(e))
    wk = realstack.Watchkeeper(
        tmp / "wk",
        f"sqlite:///{tmp}/wk/events.db",
        port=port,
        settings={
            "grouping": {"group_by": ["alertname"]},
            "agent": {
                "runbooks_dir": str(runbooks),
                "default_runbook": None,
                "tools": {"prometheus_url": prom.url},
            },
            "actions": {
                "mode": "review",
                "verify_interval": "1s",
                "shell": {"allow": [str(script)]},
            },
        },
    )
    try:
        wk.start()
        yield Stack(wk, prom, fixme, drifty, ran)
    finally:
        wk.stop()
        prom.child.stop()
        fixme.close()
        drifty.close()


def incident(wk: realstack.Watchkeeper, alertname: str, *states: str) -> dict[str, Any] | None:
    for inc in wk.incidents(*states):
        if inc["group_labels"].get("alertname") == alertname:
            return inc
    return None


def action_of(wk: realstack.Watchkeeper, incident_id: str) -> dict[str, Any] | None:
    found = wk.get("/api/v1/actions", incident=incident_id)["actions"]
    return found[0] if found else None


def wait_status(wk: realstack.Watchkeeper, action_id: str, *statuses: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        a: dict[str, Any] = wk.get(f"/api/v1/actions/{action_id}")
        return a if a["status"] in statuses else None

    try:
        return wait_for(probe, timeout=DEADLINE, what=f"action {statuses}", interval=0.3)
    except TimeoutError:
        raise AssertionError(
            f"{wk.get(f'/api/v1/actions/{action_id}')}\n{wk.log_tail(60)}"
        ) from None


def pending_action(
    wk: realstack.Watchkeeper, alertname: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    inc = wait_for(
        lambda: incident(wk, alertname, "open"), timeout=DEADLINE, what=f"{alertname} incident"
    )
    act = wait_for(lambda: action_of(wk, inc["id"]), timeout=DEADLINE, what="a proposed action")
    return inc, wait_status(wk, act["id"], "pending_approval")


def approve(wk: realstack.Watchkeeper, action_id: str, comment: str) -> dict[str, Any]:
    r = httpx.post(
        f"{wk.url}/api/v1/actions/{action_id}/approve", json={"comment": comment}, timeout=30
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_approved_action_runs_once_verifies_and_the_incident_resolves(stack: Stack) -> None:
    wk = stack.wk
    inc, act = pending_action(wk, "AppBroken")
    assert act["plan"]["spec"]["argv"][1:] == ["fixme"]
    assert act["reasons"] == ["mode review: every action needs an approval"]
    assert act["verify"]["query"] == 'wk_app_errors{job="fixme"}'
    assert [e["call_id"] for e in act["evidence"]] == ["d-errors"]
    assert not stack.ran["fixme"].exists()  # nothing runs before a person says so

    approved = approve(wk, act["id"], "errors confirmed on the dashboard")
    assert approved["approvals"][0]["comment"] == "errors confirmed on the dashboard"
    done = wait_status(
        wk, act["id"], "verified", "failed", "cancelled", "unknown", "verification_failed"
    )
    assert done["status"] == "verified", done
    assert stack.ran["fixme"].read_text().splitlines() == ["restarted fixme"]
    # The precondition was re-evaluated against Prometheus right before dispatch.
    assert any(c.startswith("- errors re-run at") and "[ok]" in c for c in done["drift"])
    assert "✓ errors.value > 0 (got 1)" in done["drift"]
    assert done["verification"].startswith("value == 0 held (got 0")

    resolved = wait_for(
        lambda: incident(wk, "AppBroken", "resolved"),
        timeout=DEADLINE,
        what="AppBroken incident to resolve",
    )
    assert resolved["id"] == inc["id"]
    kinds = [e["type"] for e in wk.events() if e["stream"] == act["id"]]
    assert kinds == [
        "PolicyDecided",
        "ApprovalRequested",
        "ActionApproved",
        "DriftChecked",
        "ActionDispatched",
        "ActionSucceeded",
        "VerificationPassed",
    ]
    assert stack.ran["fixme"].read_text().splitlines() == ["restarted fixme"]


def test_metric_recovered_before_approval_the_drift_check_cancels(stack: Stack) -> None:
    wk = stack.wk
    inc, act = pending_action(wk, "AppBrokenSticky")
    stack.drifty.forced = 0.0  # the application recovered by itself

    def recovered() -> bool:
        r = httpx.get(
            f"{stack.prom.url}/api/v1/query",
            params={"query": f'{METRIC}{{job="drifty"}}'},
            timeout=5,
        ).json()
        return r["data"]["result"] and r["data"]["result"][0]["value"][1] == "0"

    wait_for(recovered, timeout=DEADLINE, what="Prometheus to see the recovery")
    # keep_firing_for holds the alert: only the re-evaluated precondition notices.
    assert incident(wk, "AppBrokenSticky", "open") is not None

    approve(wk, act["id"], "go ahead")
    done = wait_status(wk, act["id"], "cancelled", "verified", "failed", "unknown", "verifying")
    assert done["status"] == "cancelled", done
    assert done["reason"] == "drift check: precondition no longer holds: errors.value > 0 (got 0)"
    assert "✓ incident is open" in done["drift"]
    assert "✗ errors.value > 0 (got 0)" in done["drift"]
    assert not stack.ran["drifty"].exists()
    kinds = [e["type"] for e in wk.events() if e["stream"] == act["id"]]
    assert kinds[-3:] == ["ActionApproved", "DriftChecked", "ActionCancelled"]
    assert "ActionDispatched" not in kinds
    assert incident(wk, "AppBrokenSticky", "open")["id"] == inc["id"]  # type: ignore[index]
