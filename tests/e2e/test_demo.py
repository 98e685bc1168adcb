"""`watchkeeper demo`: a newcomer sees the whole story within two minutes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
from realstack import REPO, Child, free_port, wait_for


def _get(url: str) -> Any:
    r = httpx.get(url, timeout=10)
    r.raise_for_status()
    return r.json()


def test_demo_alert_to_verified_fix_within_two_minutes(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    script = Path(sys.executable).with_name("watchkeeper")
    child = Child(
        "demo",
        [
            str(script),
            "demo",
            "--state-dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--sim-port",
            str(sim_port),
        ],
        tmp_path / "demo.log",
        None,
        REPO,
    )
    started = time.monotonic()
    child.start()
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        # The disk on web2 fills, an alert fires, the runbook proposes the cleanup.
        def pending() -> list[dict[str, Any]]:
            try:
                acts = _get(f"{api}/actions")["actions"]
            except httpx.HTTPError:
                return []
            return [
                a
                for a in acts
                if a["status"] == "pending_approval" and a["action_id"] == "clean_tmp"
            ]

        wait_for(lambda: bool(pending()), timeout=90, what="a proposed cleanup awaiting approval")
        action = pending()[0]
        # The cleanup is about web2, the host whose disk fills (its instance label).
        assert action["target"] == "web2"
        assert action["runs_on"].endswith(" on web2")
        r = httpx.post(
            f"{api}/actions/{action['id']}/approve", json={"comment": "demo test"}, timeout=10
        )
        assert r.status_code == 200, r.text

        def resolved_and_verified() -> bool:
            inc = _get(f"{api}/incidents/{action['incident_id']}")
            kinds = {e["type"] for e in inc["timeline"]}
            act = next(a for a in _get(f"{api}/actions")["actions"] if a["id"] == action["id"])
            return (
                inc["state"] == "resolved"
                and act["status"] in ("verified", "succeeded")
                and "AlertResolved" in kinds
            )

        wait_for(resolved_and_verified, timeout=60, what="cleanup run, verified, incident resolved")
        act = next(a for a in _get(f"{api}/actions")["actions"] if a["id"] == action["id"])
        assert act["status"] == "verified", act
        elapsed = time.monotonic() - started
        assert elapsed < 120, f"the demo story took {elapsed:.0f}s"
        # The estate really changed: the simulated disk is back under 80%.
        metrics = httpx.get(f"http://127.0.0.1:{sim_port}/metrics", timeout=5).text
        line = next(
            x for x in metrics.splitlines() if x.startswith('demo_disk_used_ratio{instance="web2"')
        )
        assert float(line.rsplit(" ", 1)[1]) < 0.8

        # The second simulated host: the checkout service dies on web1, a restart for web1.
        def restart() -> dict[str, Any] | None:
            acts = _get(f"{api}/actions")["actions"]
            return next((a for a in acts if a["action_id"] != "clean_tmp"), None)

        other = wait_for(restart, timeout=90, what="the restart proposed for web1")
        assert other["target"] == "web1"
    finally:
        child.stop()
    log = (tmp_path / "demo.log").read_text()
    assert "console     http://127.0.0.1:" in log
    assert "awaiting approval" in log
    assert "on host web2" in log
    assert "verified" in log
