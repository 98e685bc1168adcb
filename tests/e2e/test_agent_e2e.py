"""End to end: an alert posted to the daemon (a real process) opens an incident, which is
routed to the disk-filling runbook; the investigation queries a REAL Prometheus through the
model's tool calls (scripted OpenAI-compatible server, real `openai` client), concludes and
proposes an action; the conclusion shows in the API, the CLI, `status` and /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from llmserver import Script, ScriptedLLM, Turn, by_step, call
from metriczoo import HOST, zoo_prometheus

pytestmark = pytest.mark.integration

FREE_RATIO = (
    f'node_filesystem_avail_bytes{{instance="{HOST}", mountpoint="/var"}}'
    f' / node_filesystem_size_bytes{{instance="{HOST}", mountpoint="/var"}}'
)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[realstack.Prometheus]:
    try:
        with zoo_prometheus(tmp_path_factory.mktemp("prom")) as prom:
            yield prom
    except realstack.Unavailable as e:
        pytest.skip(str(e))


def cli(wk: realstack.Watchkeeper, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from daemon.cli.main import main; main()", "--url", wk.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=realstack.REPO,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(realstack.REPO)},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_alert_to_conclusion_with_real_prometheus(
    prometheus: realstack.Prometheus, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def propose(body: dict[str, Any]) -> Turn:
        # The model sees what the real Prometheus answered for its first tool calls.
        seen["tool_messages"] = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return Turn(
            tool_calls=[
                call(
                    "propose_action",
                    action="vacuum_journal",
                    params={"max_size": "1G"},
                    rationale="/var has 5% free and is falling; the journal lives there",
                    evidence=["s1-0", "s1-1"],
                )
            ]
        )

    turns: Script = [
        Turn(
            tool_calls=[
                call("promql_instant", query=FREE_RATIO),
                call(
                    "promql_range",
                    query=f'node_filesystem_avail_bytes{{instance="{HOST}", mountpoint="/var"}}',
                    range="10m",
                ),
            ]
        ),
        propose,
        Turn(
            tool_calls=[
                call(
                    "conclude",
                    summary="/var on web1 is 95% full and still filling",
                    probable_cause="log growth on /var",
                    evidence=["s1-0", "s1-1"],
                )
            ]
        ),
    ]
    llm = ScriptedLLM(by_step(turns))
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "grouping": {"group_by": ["alertname", "instance"]},
            "agent": {
                "llm": {
                    "base_url": llm.url,
                    "model": "scripted-e2e",
                    "api_key": "k",
                    "max_retries": 0,
                    "price_prompt_per_1k": 0.01,
                    "price_completion_per_1k": 0.03,
                },
                "tools": {"prometheus_url": prometheus.url},
            },
        },
    )
    try:
        wk.start()
        alert = [
            {
                "labels": {
                    "alertname": "HostOutOfDiskSpace",
                    "instance": HOST,
                    "mountpoint": "/var",
                    "severity": "critical",
                },
                "annotations": {"summary": "/var is almost full"},
            }
        ]
        assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        [inc] = realstack.wait_for(lambda: wk.incidents() or None, timeout=30, what="incident")

        def concluded() -> dict[str, Any] | None:
            view = wk.get(f"/api/v1/incidents/{inc['id']}")
            inv = view.get("investigation")
            return view if inv and inv["status"] == "concluded" else None

        view = realstack.wait_for(
            concluded, timeout=120, what="investigation concluded", interval=0.3
        )
        inv = view["investigation"]
        assert inv["summary"] == "/var on web1 is 95% full and still filling"
        assert inv["probable_cause"] == "log growth on /var"
        [run] = inv["runs"]
        assert run["runbook"] == "disk-filling"
        assert run["mode"] == "llm"
        assert run["model"] == "scripted-e2e"
        assert [e["call_id"] for e in run["evidence"]] == ["s1-0", "s1-1"]
        [p] = inv["proposals"]
        assert (p["action_id"], p["kind"], p["risk"], p["params"]) == (
            "vacuum_journal",
            "shell",
            "low",
            {"max_size": "1G"},
        )
        assert run["llm_calls"] == 3
        assert inv["tokens"] == 360
        assert inv["cost"] > 0
        assert len(llm.requests) == 3

        # The PromQL tool results came from the real Prometheus: ~5% free, a falling series.
        events = wk.events()
        results = [e["data"] for e in events if e["type"] == "ToolResulted"]
        instant = next(r for r in results if r["call_id"] == "s1-0")
        assert instant["status"] == "ok", instant["summary"]
        assert 0.04 < instant["facts"]["value"] < 0.06
        ranged = next(r for r in results if r["call_id"] == "s1-1")
        assert ranged["status"] == "ok"
        assert ranged["facts"]["count"] == 1
        assert ranged["facts"]["trend"] in ("falling", "flat")
        assert "status ok" in seen["tool_messages"][0]
        assert "0.04" in seen["tool_messages"][0]
        proposed = [e for e in events if e["type"] == "ActionProposed"]
        assert len(proposed) == 1
        assert proposed[0]["data"]["incident_id"] == inc["id"]

        shown = cli(wk, "incidents", "show", inc["id"][:8])
        assert "/var on web1 is 95% full and still filling" in shown
        assert "vacuum_journal" in shown
        assert "log growth on /var" in shown
        status = cli(wk, "status")
        assert "agent queue" in status
        assert "0 queued" in status
        assert "scripted-e2e" in status
        as_json = json.loads(cli(wk, "--json", "status"))
        assert as_json["reactions"]["agent"]["investigations"]["concluded"] == 1
        metrics = httpx.get(f"{wk.url}/metrics", timeout=10).text
        assert 'watchkeeper_agent_queue_length{severity="critical"} 0.0' in metrics
        assert "watchkeeper_agent_llm_calls_total 3.0" in metrics
    finally:
        wk.stop()
        llm.close()
