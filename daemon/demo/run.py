"""Run the demo: the daemon on embedded defaults, the simulated estate, and a narration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from daemon.config.settings import Settings
from daemon.demo.sim import Estate, create_sim_app
from daemon.runtime.supervisor import QuietServer, Supervisor, bind

log = logging.getLogger("watchkeeper.demo")
RUNBOOKS = Path(str(resources.files("daemon.demo").joinpath("runbooks")))  # package data
SIM_PORT = 9798  # where the shipped demo runbooks' actions call the estate

# One line per step of the story, printed as the events commit.
_STORY = {
    "IncidentOpened": "incident opened      {group_key}",
    "InvestigationStarted": "investigating        runbook {runbook_id}",
    "InvestigationConcluded": "investigation done   {summary}",
    "ActionProposed": "action proposed      {action_id} {params} on host {target}",
    "ApprovalRequested": "awaiting approval    {summary}",
    "ActionApproved": "approved             by {by} via {channel}",
    "ActionRejected": "rejected             by {by}: {reason}",
    "ActionDispatched": "running              {plan} on host {host}",
    "ActionSucceeded": "action succeeded     {detail}",
    "ActionFailed": "action failed        {reason}",
    "ActionCancelled": "action cancelled     {reason}",
    "VerificationPassed": "verified             {detail}",
    "VerificationFailed": "verification failed  {reason}",
    "IncidentResolved": "incident resolved    {reason}",
}


def install_runbooks(state_dir: Path, sim_port: int) -> Path:
    """Copy the demo runbooks next to the event log, aimed at the estate's port."""
    target = state_dir / "runbooks"
    target.mkdir(parents=True, exist_ok=True)
    for src in RUNBOOKS.glob("*.md"):
        text = src.read_text().replace(f"127.0.0.1:{SIM_PORT}", f"127.0.0.1:{sim_port}")
        (target / src.name).write_text(text)
    return target


def demo_settings(state_dir: Path, port: int, sim_port: int = SIM_PORT) -> Settings:
    """The embedded defaults, pointed at the simulated estate."""
    sim = f"http://127.0.0.1:{sim_port}"
    return Settings.model_validate(
        {
            "store": f"sqlite:///{state_dir / 'events.db'}",
            "state_dir": state_dir,
            "http": {"listen": f"127.0.0.1:{port}"},
            "grouping": {
                "group_by": ["alertname", "instance"],
                "resolve_timeout": "1m",
                "reopen_window": "2m",
            },
            "logging": {"level": "warning"},
            "agent": {
                "runbooks_dir": str(install_runbooks(state_dir, sim_port)),
                "default_runbook": None,
                "tools": {"prometheus_url": sim},
            },
            "actions": {
                "mode": "review",
                "prometheus_url": sim,
                "verify_interval": "2s",
                "http": {"allow_hosts": [f"127.0.0.1:{sim_port}"]},
            },
        }
    )


def _narrate(position: int, event: Any) -> None:
    name = type(event).__name__
    template = _STORY.get(name)
    if template is None:
        return
    fields: dict[str, Any] = {}
    keys = (
        "group_key", "runbook_id", "summary", "action_id", "params", "by", "channel", "reason",
        "target",
    )
    for key in (*keys, "detail"):
        value = getattr(event, key, "")
        fields[key] = str(value).splitlines()[0][:110] if value else ""
    plan = getattr(event, "plan", None)
    fields["plan"] = plan.summary if plan is not None else ""
    fields["host"] = plan.host if plan is not None else ""
    line = template.format(**fields)
    print(f"  {time.strftime('%H:%M:%S')}  {line}", flush=True)


async def _drive(estate: Estate, daemon_url: str) -> None:
    """Advance the estate every second and post its alerts as Prometheus would."""
    async with httpx.AsyncClient(base_url=daemon_url, timeout=10) as client:
        while True:
            now = time.time()
            estate.step(now)
            alerts = estate.evaluate_alerts(now)
            if alerts:
                with contextlib.suppress(httpx.HTTPError):
                    await client.post("/api/v2/alerts", json=alerts)
            await asyncio.sleep(1.0)


def _fresh(state_dir: Path) -> None:
    """Every demo starts from an empty event log."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)


async def run_demo(state_dir: Path, port: int = 9797, sim_port: int = SIM_PORT) -> None:
    """Start the estate and the daemon; narrate until interrupted."""
    await asyncio.to_thread(_fresh, state_dir)
    sim_sock = bind("127.0.0.1", sim_port)
    estate = Estate()
    sim = QuietServer(
        uvicorn.Config(create_sim_app(estate), lifespan="off", log_config=None, access_log=False)
    )
    sup = Supervisor(demo_settings(state_dir, port, sim_port))
    url = f"http://127.0.0.1:{port}"
    print(
        f"""
watchkeeper demo
  console     {url}/          (open it: incidents, timelines, pending approvals)
  estate      http://127.0.0.1:{sim_port}/metrics   (simulated hosts web1, web2, db1)
  event log   {state_dir / "events.db"}

What happens: in ~10 s /var on web2 starts filling; at 85% an alert fires, an incident
opens, the demo runbook investigates and proposes a cleanup. Approve it in the console,
or with:  .venv/bin/watchkeeper actions list  then  .venv/bin/watchkeeper actions approve ID
At ~45 s the checkout service on web1 dies: same story with a restart. Each action names
its target host (from the alert's instance label): web2 for the cleanup, web1 for the
restart. Ctrl-C stops.
""",
        flush=True,
    )
    sim_task = asyncio.create_task(sim.serve(sockets=[sim_sock]), name="demo:estate-http")
    daemon = asyncio.create_task(sup.run(), name="demo:daemon")
    while sup.ingestor is None or not sup.ingestor.ready:
        if daemon.done():
            daemon.result()
            return
        await asyncio.sleep(0.05)
    sup.ingestor.listeners.append(_narrate)
    driver = asyncio.create_task(_drive(estate, url), name="demo:estate")
    try:
        await daemon
    finally:
        driver.cancel()
        sim.should_exit = True
        await asyncio.gather(driver, sim_task, return_exceptions=True)
        sim_sock.close()
