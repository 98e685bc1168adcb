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
        runs = await asyncio.gather(
            *(ssh.run(host, ["/bin/sleep", "0.3"], {}, 10, 100) for _ in range(6))
        )
        assert all(r.outcome == "succeeded" for r in runs)
    finally:
        await ssh.close()
    assert ssh.connects <= 2


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
    out = await router.run_on("ops-1", ["/usr/bin/touch", str(marker)], {}, 5, 100)
    assert out[1].outcome == "succeeded"
    assert marker.exists()
