"""Crash between dispatch and outcome: the daemon is `kill -9`ed while a shell action runs.

The action (autonomous mode, low risk) appends a line to a file and then takes its time.
Once the line is there the dispatch is on record and its outcome is not: the daemon is
killed. After a restart the action shows OutcomeUnknown, is handed to a person, and the
file still has exactly one line: it was never run again.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from realstack import wait_for

pytestmark = pytest.mark.integration
DEADLINE = 90.0

RUNBOOK = """---
id: slow-fix
version: 1
title: Slow fix
match:
  - alertname="NeedsSlowFix"
tools: [alert_context]
diagnostics:
  - id: ctx
    tool: alert_context
actions:
  - id: slow_fix
    kind: shell
    argv: ["{script}", "{{params.service}}"]
    timeout: 5m
    risk: low
    params:
      type: object
      properties:
        service: {{type: string, pattern: '^[a-z]+$'}}
      required: [service]
      additionalProperties: false
default_action:
  action: slow_fix
  params:
    service: "{{labels.service}}"
  when:
    all: ["ctx.firing > 0"]
  rationale: The service needs its slow fix.
evidence_max_age: 10m
---
# Slow fix
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[realstack.Watchkeeper, Path, Path]]:
    ran = tmp_path / "ran.txt"
    pidfile = tmp_path / "fix.pid"
    script = tmp_path / "slow-fix"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$$" > "{pidfile}"\n'
        f'echo "fixed $1 $WATCHKEEPER_IDEMPOTENCY_KEY" >> "{ran}"\n'
        "exec sleep 300\n"
    )
    script.chmod(0o755)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "slow-fix.md").write_text(RUNBOOK.format(script=script))
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "agent": {"runbooks_dir": str(runbooks), "default_runbook": None},
            "actions": {"mode": "autonomous", "shell": {"allow": [str(script)]}},
        },
    )
    try:
        yield wk, ran, pidfile
    finally:
        wk.stop()
        # The orphaned fix outlives the killed daemon (as it would in production): end it.
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _action(wk: realstack.Watchkeeper) -> dict[str, Any] | None:
    found = wk.get("/api/v1/actions")["actions"]
    return found[0] if found else None


def test_kill_9_between_dispatch_and_outcome_gives_unknown_and_never_reruns(
    setup: tuple[realstack.Watchkeeper, Path, Path],
) -> None:
    wk, ran, _ = setup
    wk.start()
    alert = [
        {"labels": {"alertname": "NeedsSlowFix", "service": "billing", "severity": "critical"}}
    ]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
    wait_for(
        lambda: ran.exists() and ran.read_text().strip(), timeout=DEADLINE, what="the fix to start"
    )
    act = _action(wk)
    assert act is not None
    assert act["status"] == "dispatched"
    assert act["idempotency_key"] == f"{act['id']}:dispatch"
    assert act["reasons"] == ["mode autonomous: low risk runs without approval"]

    wk.kill()  # kill -9 while the executor waits for the fix

    wk.start()

    def unknown() -> dict[str, Any] | None:
        a = _action(wk)
        return a if a and a["status"] == "unknown" else None

    after = wait_for(unknown, timeout=DEADLINE, what="OutcomeUnknown after restart")
    assert after["detail"].startswith("watchkeeper stopped after recording the dispatch")
    assert after["escalated"].endswith("check by hand — it will not be run again")
    kinds = [e["type"] for e in wk.events() if e["stream"] == act["id"]]
    assert kinds == [
        "PolicyDecided",
        "DriftChecked",
        "ActionDispatched",
        "ActionOutcomeUnknown",
        "ActionEscalated",
    ]
    # Restart once more: state rebuilt from the log, still unknown, still not re-run.
    wk.stop()
    wk.start()
    again = _action(wk)
    assert again is not None
    assert again["status"] == "unknown"
    assert ran.read_text().splitlines() == [f"fixed billing {act['id']}:dispatch"]
