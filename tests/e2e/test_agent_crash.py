"""kill -9 the daemon during an investigation — once between tool calls (and so between
model calls), once during a model call — restart it each time, and show the investigation
completes with no model request repeated whose response had been recorded."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from llmserver import ScriptedLLM, Turn, assistant_turns, by_step, call, fingerprint

pytestmark = pytest.mark.integration

RUNBOOK = """---
id: probe-check
version: 1
title: Probe check
match: ['alertname="ProbeCheck"']
tools: [alert_context, http_probe]
actions:
  - id: restart_backend
    kind: systemd
    unit: "{params.unit}"
    operation: restart
    risk: medium
    params:
      type: object
      properties:
        unit: {type: string, pattern: '^[a-z-]+\\.service$'}
      required: [unit]
      additionalProperties: false
budgets: {steps: 6, tokens: 100000, wall_time: 10m}
---
# Probe check

Probe the backend, look at the alert, propose a restart if it is down.
"""


def test_kill_9_mid_investigation_resumes_without_repeating_answered_model_calls(
    tmp_path: Path,
) -> None:
    slow_release = threading.Event()

    def slow() -> tuple[int, bytes]:
        slow_release.wait(timeout=300)
        return 503, b"backend unavailable"

    llm = ScriptedLLM()
    llm.extra_routes["/slow"] = slow
    llm.extra_routes["/fast"] = lambda: (503, b"still unavailable")
    llm.script = by_step(
        [
            Turn(tool_calls=[call("alert_context"), call("http_probe", url=f"{llm.origin}/slow")]),
            Turn(tool_calls=[call("http_probe", url=f"{llm.origin}/fast")]),
            Turn(
                tool_calls=[
                    call(
                        "propose_action",
                        action="restart_backend",
                        params={"unit": "api-backend.service"},
                        rationale="the probe fails twice with 503",
                        evidence=["s1-1", "s2-0"],
                    )
                ]
            ),
            Turn(
                tool_calls=[
                    call(
                        "conclude",
                        summary="backend answers 503",
                        probable_cause="backend down",
                        evidence=["s2-0"],
                    )
                ]
            ),
        ]
    )
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "probe-check.md").write_text(RUNBOOK)
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "agent": {
                "runbooks_dir": str(rb_dir),
                "llm": {
                    "base_url": llm.url,
                    "model": "scripted-crash",
                    "api_key": "k",
                    "max_retries": 0,
                },
                "tools": {"http_probe_allow": [f"{llm.origin}/*"], "http_probe_timeout": "60s"},
            },
        },
    )

    def types() -> list[str]:
        return [e["type"] for e in wk.events()]

    def investigation_events() -> list[dict[str, Any]]:
        kinds = {
            "LLMRequested",
            "LLMResponded",
            "ToolCalled",
            "ToolResulted",
            "ActionProposed",
            "InvestigationConcluded",
            "InvestigationStarted",
        }
        return [e for e in wk.events() if e["type"] in kinds]

    try:
        # 1. Kill while the second tool call of step 1 runs: step 1's response is recorded,
        #    the first tool's result is recorded, the second tool has no result.
        wk.start()
        alert = [
            {"labels": {"alertname": "ProbeCheck", "instance": "api1", "severity": "critical"}}
        ]
        assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        realstack.wait_for(
            lambda: (
                [
                    e
                    for e in investigation_events()
                    if e["type"] == "ToolCalled" and e["data"]["call_id"] == "s1-1"
                ]
                or None
            ),
            timeout=60,
            what="the slow probe to start",
        )
        assert [
            e["data"]["call_id"] for e in investigation_events() if e["type"] == "ToolResulted"
        ] == ["s1-0"]
        wk.kill()
        assert len(llm.requests) == 1

        # 2. Restart; the interrupted probe runs again, then step 2 is asked. Kill during
        #    that model call (the server holds it), before its response is recorded.
        slow_release.set()
        held = llm.hold(2)
        wk.start()
        llm.wait_requests(2, timeout=60)
        realstack.wait_for(
            lambda: types().count("LLMRequested") == 2 or None, timeout=30, what="step 2 requested"
        )
        assert types().count("LLMResponded") == 1
        wk.kill()
        held.set()

        # 3. Restart; the investigation finishes.
        wk.start()

        def concluded() -> bool:
            return "InvestigationConcluded" in types()

        realstack.wait_for(
            concluded, timeout=90, what="the investigation to conclude", interval=0.2
        )
        events = investigation_events()
    finally:
        wk.stop()
        llm.close()

    responded = [e["data"]["step"] for e in events if e["type"] == "LLMResponded"]
    assert responded == [1, 2, 3, 4], "each step answered once"
    steps_asked = [assistant_turns(r) + 1 for r in llm.requests]
    # Step 2 was asked twice: its first request was cut off by the kill, never recorded.
    assert steps_asked == [1, 2, 2, 3, 4]
    prints = [fingerprint(r) for r in llm.requests]
    recorded_once = [p for i, p in enumerate(prints) if steps_asked[i] != 2]
    assert len(recorded_once) == len(set(recorded_once)), "no answered request was sent again"
    # The interrupted probe ran again after the restart; every call has exactly one result.
    called = [e["data"]["call_id"] for e in events if e["type"] == "ToolCalled"]
    results = [e["data"]["call_id"] for e in events if e["type"] == "ToolResulted"]
    assert called.count("s1-1") == 2
    assert sorted(results) == sorted(set(results)) == ["s1-0", "s1-1", "s2-0", "s3-0"]
    [proposed] = [e for e in events if e["type"] == "ActionProposed"]
    assert proposed["data"]["params"] == {"unit": "api-backend.service"}
    versions = [(e["stream"], e["version"]) for e in events]
    assert len(versions) == len(set(versions))
