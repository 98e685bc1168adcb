"""The ssh transport and the daemon acting on another host, against a real OpenSSH server.

Each test starts `/usr/sbin/sshd` on a loopback port with a host key and a client key made
for it. The inventory names that server `node-a`; what "ran there" means is checked on the
filesystem and in the environment sshd gives a session (SSH_CONNECTION).
"""

from __future__ import annotations

import asyncio
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
from sshd import Sshd

from daemon.actions.hosts import HostRouter
from daemon.config.inventory import Inventory, InventoryHost
from daemon.domain.action_model import ActionPlan
from handlers.transports.local import LocalTransport
from handlers.transports.ssh import SshTransport

pytestmark = pytest.mark.integration
DEADLINE = 90.0


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _node_a(server: Sshd) -> InventoryHost:
    return InventoryHost(name="node-a", address="127.0.0.1", port=server.port, user=server.user)


def _transport(server: Sshd, known_hosts: Path | None = None, **kw: Any) -> SshTransport:
    return SshTransport(
        server.client_key.read_text(),
        str(known_hosts or server.known_hosts),
        connect_timeout=5,
        **kw,
    )


# --- the transport on its own ------------------------------------------------------------


async def test_runs_on_the_host_with_the_key_in_its_environment_and_reuses_one_connection(
    sshd: Sshd, tmp_path: Path
) -> None:
    ssh = _transport(sshd)
    marker = tmp_path / "touched by node-a"
    try:
        out = await ssh.run(
            _node_a(sshd), ["/usr/bin/env"], {"WATCHKEEPER_IDEMPOTENCY_KEY": "k1:dispatch"},
            10, 65536,
        )
        assert out.outcome == "succeeded", out.detail
        assert out.exit_code == 0
        assert "WATCHKEEPER_IDEMPOTENCY_KEY=k1:dispatch" in out.output
        assert "SSH_CONNECTION=127.0.0.1" in out.output  # it ran in an sshd session
        # One argument with a space and a quote stays one argument on the remote side.
        out = await ssh.run(_node_a(sshd), ["/usr/bin/touch", str(marker)], {}, 10, 4096)
        assert out.outcome == "succeeded", out.detail
        assert marker.exists()
        out = await ssh.run(_node_a(sshd), ["/bin/sh", "-c", "exit 3"], {}, 10, 4096)
        assert (out.outcome, out.exit_code) == ("failed", 3)
    finally:
        await ssh.close()
    assert ssh.connects == 1
    assert sshd.accepted() == 1, sshd.log()


async def test_a_wrong_host_key_is_refused_and_nothing_runs(sshd: Sshd, tmp_path: Path) -> None:
    ssh = _transport(sshd, sshd.wrong_known_hosts)
    marker = tmp_path / "must-not-exist"
    out = await ssh.run(_node_a(sshd), ["/usr/bin/touch", str(marker)], {}, 10, 4096)
    await ssh.close()
    assert out.outcome == "failed"
    assert out.detail.startswith("not run: ")
    assert "host key" in out.detail
    assert not marker.exists()
    assert sshd.accepted() == 0


async def test_an_unknown_host_key_is_never_trusted_on_first_use(
    sshd: Sshd, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh = _transport(sshd, empty)
    assert await ssh.probe(_node_a(sshd)) is not None
    out = await ssh.run(_node_a(sshd), ["/usr/bin/true"], {}, 10, 4096)
    assert out.outcome == "failed"
    assert empty.read_text() == ""  # nothing was learnt
    assert sshd.accepted() == 0


async def test_timeout_kills_the_remote_process(sshd: Sshd, tmp_path: Path) -> None:
    pidfile = tmp_path / "remote.pid"
    ssh = _transport(sshd)
    out = await ssh.run(
        _node_a(sshd),
        ["/bin/sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 60'],
        {},
        1.5,
        4096,
    )
    await ssh.close()
    assert out.outcome == "unknown"
    assert "killed" in out.detail
    pid = int(pidfile.read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=10, what=f"remote sleep (pid {pid}) to be killed")


async def test_output_is_capped_and_connections_per_host_are_bounded(sshd: Sshd) -> None:
    ssh = _transport(sshd, max_per_host=2)
    host = _node_a(sshd)
    try:
        big = await ssh.run(host, ["/usr/bin/seq", "1", "200000"], {}, 10, 1000)
        assert big.outcome == "succeeded"
        assert big.output.endswith("[output truncated]")
        assert len(big.output) < 1100
        # A diagnostic does not drain: `yes` never ends, yet it returns at the cap, stopped.
        diag = await ssh.run(host, ["/usr/bin/yes"], {}, 30, 1000, drain=False)
        assert diag.output.endswith("[output truncated]")
        assert diag.exit_code == -9
        assert diag.seconds < 10
        runs = await asyncio.gather(
            *(ssh.run(host, ["/bin/sleep", "0.3"], {}, 10, 100) for _ in range(6))
        )
        assert all(r.outcome == "succeeded" for r in runs)
    finally:
        await ssh.close()
    assert ssh.connects <= 3  # the stopped diagnostic's connection is not reused


async def test_the_ops_host_guard_refuses_local_for_another_target(tmp_path: Path) -> None:
    marker = tmp_path / "must-not-exist"
    inventory = Inventory(
        source="test",
        hosts={"web-3": InventoryHost(name="web-3", address="web-3", connection="local")},
    )
    router = HostRouter("ops-1", frozenset({"ops-1"}), inventory, {})
    local = LocalTransport(router.is_this_host, lambda: router.this_host)
    router.transports["local"] = local
    with pytest.raises(ValueError, match="local transport runs only on this host"):
        router.resolve("web-3")
    # Asked directly (a plan recorded before the inventory changed), it still refuses.
    out = await local.run(inventory.hosts["web-3"], ["/usr/bin/touch", str(marker)], {}, 5, 100)
    assert out.outcome == "failed"
    assert "web-3 is another machine" in out.detail
    plan = ActionPlan(
        kind="shell", action_id="x", summary="touch", targets=("x",),
        spec={"argv": ["/usr/bin/touch", str(marker)]}, host="web-3", transport="local",
    )
    out = await router.run(plan, ["/usr/bin/touch", str(marker)], {}, 5, 100)
    assert out.outcome == "failed"
    assert not marker.exists()
    # This host itself still runs locally.
    host, here = await router.run_on("ops-1", ["/usr/bin/touch", str(marker)], {}, 5, 100)
    assert (host, here.outcome) == ("ops-1", "succeeded")
    assert marker.exists()


# --- the daemon: an incident about node-a ------------------------------------------------

RUNBOOK = """---
id: node-fix
version: 1
title: Fix a node
match:
  - alertname="NodeNeedsFix"
tools: [alert_context, shell_diagnostic]
diagnostics:
  - id: ctx
    tool: alert_context
  - id: where
    tool: shell_diagnostic
    args: {{command: whereami}}
actions:
  - id: fix_node
    kind: shell
    argv: ["{script}", "{{params.service}}"]
    timeout: {timeout}
    risk: {risk}
    params:
      type: object
      properties:
        service: {{type: string, pattern: '^[a-z]+$'}}
      required: [service]
      additionalProperties: false
default_action:
  action: fix_node
  params:
    service: "{{labels.service}}"
  when:
    all: ["ctx.firing > 0"]
  rationale: The node needs its fix.
evidence_max_age: 10m
---
# Fix a node
"""


def _daemon(
    tmp: Path, server: Sshd, *, mode: str = "review", risk: str = "medium",
    timeout: str = "1m", script_body: str = "", known_hosts: Path | None = None,
) -> tuple[realstack.Watchkeeper, Path, Path]:
    ran = tmp / "ran.txt"
    script = tmp / "fix-node"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "fixed $1 key=$WATCHKEEPER_IDEMPOTENCY_KEY via=$SSH_CONNECTION" >> "{ran}"\n'
        + script_body
    )
    script.chmod(0o755)
    runbooks = tmp / "runbooks"
    runbooks.mkdir()
    (runbooks / "node-fix.md").write_text(
        RUNBOOK.format(script=script, timeout=timeout, risk=risk)
    )
    inventory = tmp / "inventory.yml"
    inventory.write_text(
        "all:\n"
        "  children:\n"
        "    nodes:\n"
        "      vars: {env: test}\n"
        "      hosts:\n"
        f"        node-a: {{ansible_host: 127.0.0.1, ansible_port: {server.port}, "
        f"ansible_user: {server.user}}}\n"
    )
    wk = realstack.Watchkeeper(
        tmp / "wk",
        f"sqlite:///{tmp}/wk/events.db",
        settings={
            "grouping": {"group_by": ["alertname", "instance", "service"]},
            "agent": {
                "runbooks_dir": str(runbooks),
                "default_runbook": None,
                "tools": {"shell": {"whereami": {"argv": ["/usr/bin/printenv", "SSH_CONNECTION"]}}},
            },
            "actions": {"mode": mode, "shell": {"allow": [str(script)]}},
            "host": {"name": "ops-test", "aliases": []},
            "inventory": {
                "file": str(inventory),
                "ssh": {
                    "key": f"file:{server.client_key}",
                    "known_hosts": str(known_hosts or server.known_hosts),
                    "connect_timeout": "5s",
                },
            },
        },
    )
    return wk, ran, script


def _fire(wk: realstack.Watchkeeper, instance: str, service: str = "billing") -> None:
    alert = [
        {
            "labels": {
                "alertname": "NodeNeedsFix",
                "instance": instance,
                "service": service,
                "severity": "critical",
            }
        }
    ]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200


def _action(wk: realstack.Watchkeeper, status: str | None = None) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = wk.get("/api/v1/actions")["actions"]
    if not found or (status is not None and found[0]["status"] != status):
        return None
    return found[0]


def _diagnostic(wk: realstack.Watchkeeper) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in wk.events()
            if e["type"] == "ToolResulted" and "printenv" in str(e.get("data", e))
        ),
        None,
    )


def test_an_incident_about_node_a_is_diagnosed_and_fixed_on_node_a(
    sshd: Sshd, tmp_path: Path
) -> None:
    wk, ran, _ = _daemon(tmp_path, sshd)
    try:
        wk.start()
        _fire(wk, "node-a:9100")
        act = wait_for(
            lambda: _action(wk, "pending_approval"), timeout=DEADLINE, what="an approval request"
        )
        assert act["target"] == "node-a"
        assert act["target_source"] == "label instance=node-a:9100"
        assert act["plan"]["host"] == "node-a"
        assert act["plan"]["transport"] == "ssh"
        assert act["runs_on"].endswith("on node-a (ssh)")
        # The diagnostic ran in an sshd session on node-a, before anyone approved anything.
        diag = _diagnostic(wk)
        assert diag is not None, [e["type"] for e in wk.events()]
        assert "on node-a exited 0: 127.0.0.1" in str(diag)
        assert not ran.exists()
        r = httpx.post(
            f"{wk.url}/api/v1/actions/{act['id']}/approve", json={"comment": "go"}, timeout=30
        )
        assert r.status_code == 200, r.text
        done = wait_for(
            lambda: _action(wk, "succeeded") or _action(wk, "verified"),
            timeout=DEADLINE,
            what="the action to succeed",
        )
        line = ran.read_text().strip()
        assert line.startswith(f"fixed billing key={act['id']}:dispatch via=127.0.0.1 ")
        assert len(ran.read_text().splitlines()) == 1
        assert "on node-a" in done["detail"]
    finally:
        wk.stop()


def test_a_wrong_host_key_is_refused_at_dispatch_and_nothing_runs(
    sshd: Sshd, tmp_path: Path
) -> None:
    wk, ran, _ = _daemon(
        tmp_path, sshd, mode="autonomous", risk="low", known_hosts=sshd.wrong_known_hosts
    )
    try:
        wk.start()
        _fire(wk, "node-a:9100")
        act = wait_for(
            lambda: _action(wk, "cancelled") or _action(wk, "failed"),
            timeout=DEADLINE,
            what="the action to be refused",
        )
        assert "host key not verified" in " ".join([act["reason"], act["detail"], *act["drift"]])
        assert not ran.exists()
        assert sshd.accepted() == 0
    finally:
        wk.stop()


def test_a_host_not_in_the_inventory_proposes_nothing_runnable_and_says_why(
    sshd: Sshd, tmp_path: Path
) -> None:
    wk, ran, _ = _daemon(tmp_path, sshd, mode="autonomous", risk="low")
    try:
        wk.start()
        _fire(wk, "db-7:9100")
        act = wait_for(lambda: _action(wk, "refused"), timeout=DEADLINE, what="a refusal")
        assert act["target"] == "db-7"
        assert act["plan"] is None
        assert any("target db-7 is not in the inventory" in r for r in act["reasons"]), act
        # The shell diagnostic was refused too: it never ran here instead.
        diag = _diagnostic(wk)
        assert diag is not None
        assert "not in the inventory" in str(diag)
        assert not ran.exists()
        assert sshd.accepted() == 0
    finally:
        wk.stop()


def test_kill_9_mid_command_on_node_a_gives_unknown_and_never_reruns(
    sshd: Sshd, tmp_path: Path
) -> None:
    pidfile = tmp_path / "remote.pid"
    wk, ran, _ = _daemon(
        tmp_path, sshd, mode="autonomous", risk="low", timeout="5m",
        script_body=f'echo "$$" > "{pidfile}"\nexec sleep 300\n',
    )
    try:
        wk.start()
        _fire(wk, "node-a:9100")
        wait_for(lambda: ran.exists() and ran.read_text().strip(), timeout=DEADLINE,
                 what="the fix to start on node-a")
        assert _action(wk, "dispatched") is not None
        wk.kill()
        wk.start()
        after = wait_for(lambda: _action(wk, "unknown"), timeout=DEADLINE, what="OutcomeUnknown")
        assert after["detail"].startswith("watchkeeper stopped after recording the dispatch")
        wk.stop()
        wk.start()
        assert _action(wk, "unknown") is not None
        assert len(ran.read_text().splitlines()) == 1
    finally:
        wk.stop()
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_sighup_reloads_the_inventory(sshd: Sshd, tmp_path: Path) -> None:
    wk, ran, _ = _daemon(tmp_path, sshd, mode="autonomous", risk="low")
    inventory = tmp_path / "inventory.yml"
    listed = inventory.read_text()
    inventory.write_text("all:\n  hosts:\n    other: {}\n")
    try:
        wk.start()
        _fire(wk, "node-a:9100", service="first")
        act = wait_for(lambda: _action(wk, "refused"), timeout=DEADLINE, what="a refusal")
        assert any("target node-a is not in the inventory" in r for r in act["reasons"])
        inventory.write_text(listed)
        assert wk.child is not None
        assert wk.child.proc is not None
        wk.child.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "inventory applied" in wk.log_tail(200), timeout=30, what="the reload"
        )
        # A new incident about node-a (another service) now runs there.
        httpx.post(
            f"{wk.url}/api/v2/alerts",
            json=[{"labels": {"alertname": "NodeNeedsFix", "instance": "node-a:9100",
                              "service": "second", "severity": "critical", "x": "2"}}],
            timeout=10,
        )

        def second() -> dict[str, Any] | None:
            acts = wk.get("/api/v1/actions")["actions"]
            return next(
                (a for a in acts if a["params"].get("service") == "second"
                 and a["status"] in ("succeeded", "verified")),
                None,
            )

        try:
            done = wait_for(second, timeout=DEADLINE, what="the action after the reload")
        except TimeoutError as e:
            raise AssertionError(f"{e}: {wk.get('/api/v1/actions')}") from None
        assert done["plan"]["host"] == "node-a"
        assert ran.read_text().startswith("fixed second ")
    finally:
        wk.stop()


async def test_shell_diagnostics_run_on_the_target_or_are_refused() -> None:
    from datetime import UTC, datetime

    from daemon.domain.state import World
    from daemon.runbooks.tools import ShellDiagnosticArgs, ToolContext
    from handlers.tools.shell import ShellDiagnostic, ShellTemplateSpec

    router = HostRouter("ops-1", frozenset({"localhost"}), Inventory(source="inv.yml"), {})
    router.transports["local"] = LocalTransport(router.is_this_host, lambda: router.this_host)
    tool = ShellDiagnostic({"yes": ShellTemplateSpec(["/usr/bin/yes"], 20)}, 500, router)

    def ctx(target: str) -> ToolContext:
        return ToolContext(None, "r", {}, World(), datetime.now(UTC), target)

    here = await tool.run(ShellDiagnosticArgs(command="yes"), ctx("localhost"))
    assert here.status == "ok"
    assert here.summary.startswith("/usr/bin/yes on ops-1 exited -9")  # stopped at the cap
    assert here.facts["truncated"] is True
    away = await tool.run(ShellDiagnosticArgs(command="yes"), ctx("web-3"))
    assert away.status == "refused"
    assert "target web-3 is not in the inventory (inv.yml)" in away.summary
