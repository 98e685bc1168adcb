"""Debian's real `amtool` against the daemon's Alertmanager API v2: alerts and silences."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from realstack import Unavailable


@pytest.fixture
def wk(tmp_path: Path) -> Any:
    try:
        realstack.require("/usr/bin/amtool")
    except Unavailable as e:
        pytest.skip(str(e))
    daemon = realstack.Watchkeeper(
        tmp_path / "wk", f"sqlite:///{tmp_path}/wk/events.db",
        settings={"grouping": {"group_by": ["alertname"]}, "agent": {"enabled": False}},
    )
    daemon.start()
    yield daemon
    daemon.stop()


def amtool(wk: realstack.Watchkeeper, *args: str, ok: bool = True) -> str:
    done = subprocess.run(
        ["/usr/bin/amtool", f"--alertmanager.url={wk.url}", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if ok:
        assert done.returncode == 0, f"amtool {args}: {done.stdout}{done.stderr}"
    return done.stdout + (done.stderr if not ok else "")


def test_amtool_reads_alerts_and_manages_silences(wk: realstack.Watchkeeper) -> None:
    alerts = [
        {"labels": {"alertname": "DiskFull", "instance": "web1", "severity": "critical"},
         "annotations": {"summary": "/var is full"}},
        {"labels": {"alertname": "CPUHigh", "instance": "web2"}},
    ]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200
    realstack.wait_for(lambda: len(wk.incidents()) == 2, timeout=30, what="two incidents")

    listed = json.loads(amtool(wk, "alert", "query", "-o", "json"))
    assert sorted(a["labels"]["alertname"] for a in listed) == ["CPUHigh", "DiskFull"]
    disk = next(a for a in listed if a["labels"]["alertname"] == "DiskFull")
    assert disk["annotations"] == {"summary": "/var is full"}
    assert disk["status"]["state"] == "active"
    assert disk["receivers"] == [{"name": "watchkeeper"}]
    only = json.loads(amtool(wk, "alert", "query", "-o", "json", "instance=web1"))
    assert [a["labels"]["alertname"] for a in only] == ["DiskFull"]

    sid = amtool(wk, "silence", "add", "alertname=CPUHigh", "--comment=known, deploying",
                 "--duration=2h", "--author=amtool-user").strip()
    assert len(sid) == 36, sid
    silences = json.loads(amtool(wk, "silence", "query", "-o", "json"))
    [s] = [x for x in silences if x["id"] == sid]
    assert s["status"]["state"] == "active"
    assert s["matchers"] == [{"name": "alertname", "value": "CPUHigh", "isRegex": False,
                              "isEqual": True}]
    assert s["comment"] == "known, deploying"
    # The daemon records who asked (loopback, no tokens: the local admin), not the body's claim.
    assert s["createdBy"] != ""
    assert sid in amtool(wk, "silence", "query", "-q", "alertname=CPUHigh")
    assert sid not in amtool(wk, "silence", "query", "-q", "alertname=DiskFull")

    # A silenced alert leaves the default (active) view and shows with --silenced.
    active = json.loads(amtool(wk, "alert", "query", "-o", "json"))
    assert [a["labels"]["alertname"] for a in active] == ["DiskFull"]
    both = json.loads(amtool(wk, "alert", "query", "-s", "-o", "json"))
    cpu = next(a for a in both if a["labels"]["alertname"] == "CPUHigh")
    assert cpu["status"] == {"state": "suppressed", "silencedBy": [sid], "inhibitedBy": []}

    amtool(wk, "silence", "expire", sid)
    assert sid not in amtool(wk, "silence", "query", "-q")
    expired = json.loads(amtool(wk, "silence", "query", "--expired", "-o", "json"))
    assert [x["status"]["state"] for x in expired if x["id"] == sid] == ["expired"]
    before = len(wk.events())
    amtool(wk, "silence", "expire", sid)  # again: nothing to do, nothing recorded
    assert len(wk.events()) == before

    # Refusals come back with Alertmanager's kind of reason.
    body = {"matchers": [{"name": "alertname", "value": "(", "isRegex": True}],
            "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "x", "comment": "x"}
    bad = httpx.post(f"{wk.url}/api/v2/silences", json=body, timeout=10)
    assert bad.status_code == 400
    assert bad.json().startswith("invalid silence: "), bad.text
    past = {**body, "matchers": [{"name": "a", "value": "b", "isRegex": False}],
            "endsAt": "2021-01-01T00:00:00Z"}
    bad = httpx.post(f"{wk.url}/api/v2/silences", json=past, timeout=10)
    assert bad.status_code == 400
    assert "in the past" in bad.json(), bad.text

    groups = httpx.get(f"{wk.url}/api/v2/alerts/groups", timeout=10).json()
    assert sorted(g["labels"]["alertname"] for g in groups) == ["CPUHigh", "DiskFull"]
    assert all(g["receiver"] == {"name": "watchkeeper"} for g in groups)
    shown = amtool(wk, "config", "show")
    assert "watchkeeper" in shown
    missing = httpx.get(f"{wk.url}/api/v2/silence/{'0' * 8}-0000-0000-0000-{'0' * 12}",
                        timeout=10)
    assert missing.status_code == 404
