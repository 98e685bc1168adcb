"""The per-host action lease across `kill -9`.

Two incidents on one host each get an autonomous fix. The first runs (a script that writes
a line, then takes its time); the second finds the host leased and waits. The daemon is
killed. After the restart the first action's outcome is unknown, and an action of unknown
outcome keeps its host leased while its incident is open: the second still waits, and when
its wait runs out it is cancelled with the reason and handed to a person. The host saw one
fix, never two at once.
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
from test_actions_crash import RUNBOOK

pytestmark = pytest.mark.integration
DEADLINE = 90.0


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[realstack.Watchkeeper, Path]]:
    ran = tmp_path / "ran.txt"
    pidfile = tmp_path / "fix.pid"
    script = tmp_path / "slow-fix"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$$" >> "{pidfile}"\n'
        f'echo "fixed $1" >> "{ran}"\n'
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
            "grouping": {"group_by": ["alertname", "service"]},
            "agent": {"runbooks_dir": str(runbooks), "default_runbook": None},
            "actions": {"mode": "autonomous", "shell": {"allow": [str(script)]}},
            "situations": {"lease_wait": "20s"},
            # The alerts are about web1: this daemon is web1, so the fixes run here, locally.
            "host": {"name": "web1"},
        },
    )
    try:
        yield wk, ran
    finally:
        wk.stop()
        if pidfile.exists():
            for pid in pidfile.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)


def _actions(wk: realstack.Watchkeeper) -> dict[str, dict[str, Any]]:
    return {a["params"]["service"]: a for a in wk.get("/api/v1/actions")["actions"]}


def _types(wk: realstack.Watchkeeper, stream: str) -> list[str]:
    return [e["type"] for e in wk.events() if e["stream"] == stream]


def test_a_leased_host_stays_leased_across_kill_9(
    setup: tuple[realstack.Watchkeeper, Path],
) -> None:
    wk, ran = setup
    wk.start()
    alerts = [
        {"labels": {"alertname": "NeedsSlowFix", "service": svc, "instance": "web1:9100"}}
        for svc in ("billing", "orders")
    ]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200

    def one_runs_one_waits() -> tuple[dict[str, Any], dict[str, Any]] | None:
        acts = list(_actions(wk).values())
        running = [a for a in acts if a["status"] == "dispatched"]
        waiting = [a for a in acts if "ActionLeaseWaiting" in _types(wk, a["id"])]
        return (running[0], waiting[0]) if running and waiting else None

    first, second = wait_for(one_runs_one_waits, timeout=DEADLINE, what="one fix, one waiting")
    assert second["status"] == "approved"
    wait_for(lambda: ran.exists() and ran.read_text().strip(), timeout=DEADLINE, what="the fix")
    [waited] = [e for e in wk.events() if e["type"] == "ActionLeaseWaiting"]
    assert waited["data"]["target"] == "web1"
    assert waited["data"]["held_by"] == first["id"]

    wk.kill()  # kill -9 while the first fix runs and the second waits for the host
    wk.start()

    after = wait_for(
        lambda: (a := _actions(wk)) and a[first["params"]["service"]]["status"] == "unknown" and a,
        timeout=DEADLINE,
        what="the first fix unknown after restart",
    )
    # The restarted daemon did not dispatch the second fix: the host is still leased.
    assert after[second["params"]["service"]]["status"] == "approved"
    assert "ActionDispatched" not in _types(wk, second["id"])

    def cancelled() -> dict[str, Any] | None:
        a = _actions(wk)[second["params"]["service"]]
        return a if a["status"] == "cancelled" else None

    gone = wait_for(cancelled, timeout=DEADLINE, what="the waiting fix to give up")
    assert gone["reason"].startswith("web1 still leased after waiting")
    assert first["id"] in gone["reason"]
    assert "a person decides" in gone["escalated"]
    assert _types(wk, second["id"])[-3:] == [
        "ActionLeaseWaiting",
        "ActionCancelled",
        "ActionEscalated",
    ]
    # One fix ever ran on the host.
    assert len(ran.read_text().splitlines()) == 1
