"""A model's run that cannot be trusted ends escalated, and the reason reaches people: in
the chat message actually sent (to a webhook receiver on loopback) and on the console's
incident page. Three ways to get there on a critical incident: refused proposals, a
conclusion that cites no evidence, and an exhausted budget. Daemon in-process, scripted
model over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatstubs import ChatStub
from llmserver import ScriptedLLM, Turn, call
from test_api import running

RUNBOOK = """---
id: app-errors
version: 1
title: Application errors
match:
  - alertname="AppBroken"
tools: [alert_context]
diagnostics:
  - id: ctx
    tool: alert_context
    why: the alerts as they are now
budgets:
  steps: 2
  tokens: 40000
  wall_time: 5m
---
# Application errors
"""

CASES: dict[str, tuple[list[Turn], str]] = {
    "refused proposals": (
        [
            Turn(tool_calls=[call("propose_action", action="reboot", params={}, rationale="x")]),
            Turn(tool_calls=[call("conclude", summary="rebooted", evidence=["d-ctx"])]),
        ],
        "1 proposal(s) were refused (last: ",
    ),
    "no evidence": ([Turn(content="done")], "the conclusion cites no evidence"),
    "budget": (
        [
            Turn(tool_calls=[call("alert_context")]),
            Turn(tool_calls=[call("alert_context", limit=5)]),
        ],
        "budget exhausted (steps: 2 of 2 model steps used)",
    ),
}


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    yield server
    server.close()


@pytest.mark.parametrize("case", CASES)
async def test_the_reason_is_in_the_chat_message_sent_and_on_the_console(
    tmp_path: Path, llm: ScriptedLLM, case: str
) -> None:
    script, reason = CASES[case]
    llm.script = script
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "app-errors.md").write_text(RUNBOOK)
    with ChatStub() as stub:
        settings: dict[str, Any] = {
            "agent": {
                "runbooks_dir": str(runbooks),
                "default_runbook": None,
                "llm": {
                    "base_url": llm.url,
                    "model": "scripted-1",
                    "api_key": "k",
                    "max_retries": 0,
                },
            },
            "notifications": {
                "channels": {"pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK)}},
                "policies": [{"name": "oncall", "levels": [{"channels": ["pager"]}]}],
            },
        }
        async with running(tmp_path, settings) as d:
            labels = {"alertname": "AppBroken", "service": "web", "severity": "critical"}
            await d.post_alerts({"labels": labels})

            def escalated() -> list[dict[str, Any]]:
                return [
                    r.body
                    for r in stub.at(stub.WEBHOOK)
                    if r.body.get("event") == "investigation_escalated"
                ]

            for _ in range(400):
                if escalated():
                    break
                await asyncio.sleep(0.05)
            [sent] = escalated()
            assert sent["note"].startswith("Investigation escalated to a person: ")
            assert reason in sent["note"]
            assert sent["incident"]["title"] == "AppBroken"
            assert stub.problems() == []
            # The console flags it on the incident's page, with the same reason.
            [inc] = await d.incidents()
            page = await d.http.get(f"/incidents/{inc['id']}")
            assert page.status_code == 200
            assert "escalated: " in page.text
            assert f"escalated: {reason}" in page.text
            # And in the incident list, so nobody has to open each incident to find it.
            listing = await d.http.get("/")
            assert f'<div class="escalated">agent escalated: {reason}' in listing.text
