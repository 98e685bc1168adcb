"""A host-failure storm, with and without correlation into situations, side by side.

A node goes down and 30 dependent alerts follow across 10 services (service down, error
rate, failed probe for each), arriving in shuffled batches as Prometheus would send them.
The real daemon runs in-process (HTTP intake, SQLite store, reactor, agent, notifier) with
the scripted OpenAI-compatible model of tests/support/llmserver.py (each investigation:
look at the alerts, propose a restart on the host, conclude) and a local webhook receiver
as the pager. Reported per run: incidents opened, situations, investigations started,
model calls, pages sent, actions proposed and how many of them act on the same host.

    .venv/bin/python bench/storm.py
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from llmserver import ScriptedLLM, Turn, by_step, call  # noqa: E402

from daemon.config.settings import load_config  # noqa: E402
from daemon.domain.lease import action_target  # noqa: E402
from daemon.runtime.sdnotify import SystemdNotifier  # noqa: E402
from daemon.runtime.supervisor import Supervisor  # noqa: E402

HOST = "node1"
SERVICES = [f"svc{i}" for i in range(10)]
RUNBOOK = """---
id: storm-triage
version: 1
title: Triage a failing host
match:
  - alertname=~".+"
tools: [alert_context]
actions:
  - id: restart_host_services
    kind: shell
    title: Restart the services of a host
    argv: ["/bin/true", "{params.host}"]
    risk: medium
    params:
      type: object
      properties:
        host: {type: string, pattern: '^[a-z0-9.-]+$'}
      required: [host]
      additionalProperties: false
budgets:
  steps: 6
---
# Triage a failing host
Look at the alerts; if the host itself is down, its services follow.
"""


def storm() -> list[dict[str, Any]]:
    """NodeDown plus 30 dependent alerts across 10 services."""
    alerts = [
        {"labels": {"alertname": "NodeDown", "instance": f"{HOST}:9100", "severity": "critical"}}
    ]
    for i, svc in enumerate(SERVICES):
        port = 8000 + i
        base = {"service": svc, "severity": "warning"}
        alerts += [
            {"labels": {"alertname": "ServiceDown", "instance": f"{HOST}:{port}", **base}},
            {"labels": {"alertname": "HighErrorRate", "instance": f"{HOST}:{port}", **base}},
            {
                "labels": {
                    "alertname": "ProbeFailed",
                    "instance": f"http://{HOST}:{port}/health",
                    **base,
                }
            },
        ]
    return alerts


class Pager:
    """A webhook receiver that counts what it gets, by event type."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        pager = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                pager.events[str(body.get("event", "?"))] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def script() -> Any:
    return by_step(
        [
            Turn(tool_calls=[call("alert_context")]),
            Turn(
                tool_calls=[
                    call(
                        "propose_action",
                        action="restart_host_services",
                        params={"host": HOST},
                        rationale="the host's services are all failing",
                        evidence=[],
                    )
                ]
            ),
            Turn(
                tool_calls=[
                    call(
                        "conclude",
                        summary=f"{HOST} is down; its services fail with it",
                        probable_cause=f"{HOST} down",
                        evidence=[],
                    )
                ]
            ),
        ],
        length=10_000,
    )


async def run(correlate: bool, tmp: Path) -> dict[str, Any]:
    """One storm through a fresh daemon; the figures when everything has settled."""
    llm, pager = ScriptedLLM(script()), Pager()
    runbooks = tmp / "runbooks"
    runbooks.mkdir(parents=True)
    (runbooks / "storm-triage.md").write_text(RUNBOOK)
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "store": f"sqlite:///{tmp}/events.db",
        "state_dir": str(tmp),
        "http": {"listen": listen},
        "grouping": {"group_by": ["alertname", "service"]},
        "situations": {"correlate": correlate, "window": "5m"},
        "agent": {
            "runbooks_dir": str(runbooks),
            "default_runbook": "storm-triage",
            "concurrency": 8,
            "llm": {"base_url": llm.url, "model": "scripted", "api_key": "k", "max_retries": 0},
        },
        "actions": {"mode": "observe"},
        "notifications": {
            "channels": {"pager": {"type": "webhook", "url": pager.url}},
            "policies": [{"name": "oncall", "levels": [{"channels": ["pager"]}]}],
            # Storm control off, to count what each design asks to send.
            "storm": {"max_messages": 1000},
        },
    }
    path = tmp / "watchkeeper.yaml"
    path.write_text(yaml.safe_dump(config))
    sup = Supervisor(load_config(path), path, notifier=SystemdNotifier({}))
    task = asyncio.create_task(sup.run(), name="supervisor")
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=30) as http:
            for _ in range(600):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            alerts = storm()
            random.Random(22).shuffle(alerts)
            for i in range(0, len(alerts), 8):  # batches, as Prometheus sends them
                r = await http.post("/api/v2/alerts", json=alerts[i : i + 8])
                assert r.status_code == 200, r.text
                await asyncio.sleep(0.2)
            await settle(sup, llm, pager)
            elapsed = time.perf_counter() - started
            world = sup.ingestor.world  # type: ignore[union-attr]
            actions = list(world.actions.active.values()) + list(world.actions.past.values())
            by_host = Counter(action_target(a) for a in actions)
            return {
                "incidents opened": len(world.incidents) + len(world.closed),
                "situations": len(world.situations.active) + len(world.situations.past),
                "investigations started": len(world.investigations.active)
                + len(world.investigations.past),
                "LLM calls": len(llm.requests),
                "pages sent": pager.events["incident_opened"] + pager.events["escalated"],
                "webhook posts (all)": sum(pager.events.values()),
                "actions proposed": len(actions),
                "actions on one host": max(by_host.values(), default=0),
                "seconds": round(elapsed, 1),
            }
    finally:
        sup.stop.set()
        await asyncio.wait_for(task, 60)
        llm.close()
        pager.close()


async def settle(sup: Supervisor, llm: ScriptedLLM, pager: Pager, quiet: float = 1.5) -> None:
    """Wait until no investigation is unfinished and nothing new happened for `quiet` s."""
    last: tuple[int, int, int] | None = None
    since = time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        world = sup.ingestor.world  # type: ignore[union-attr]
        busy = any(not i.finished for i in world.investigations.active.values())
        now = (world.position, len(llm.requests), sum(pager.events.values()))
        if now != last or busy:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the storm did not settle in 300s")


def main() -> None:
    """Run both, print the table."""
    with tempfile.TemporaryDirectory() as d:
        off = asyncio.run(run(False, Path(d) / "off"))
        on = asyncio.run(run(True, Path(d) / "on"))
    print(
        f"host-failure storm: NodeDown on {HOST} + {len(storm()) - 1} dependent alerts "
        f"across {len(SERVICES)} services"
    )
    print(f"{'':28}{'correlation off':>18}{'correlation on':>18}")
    for key in off:
        print(f"{key:28}{off[key]!s:>18}{on[key]!s:>18}")
    ratio = on["LLM calls"] / off["LLM calls"] if off["LLM calls"] else 0.0
    print(f"model calls with correlation: {ratio:.0%} of without")
    goal = (
        on["situations"] == 1
        and on["pages sent"] == 1
        and on["investigations started"] == 1
        and on["actions on one host"] <= 1
        and ratio < 0.2
    )
    print(
        "goal (one situation, one page, one lead investigation, no conflicting actions, "
        f"< 1/5 of the model calls): {'met' if goal else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
