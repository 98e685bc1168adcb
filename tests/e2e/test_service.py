"""Running as a service for days: the watchdog tracks the writer thread; logs never hold secrets."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from realstack import Watchkeeper, free_port
from test_runtime import NotifySocket

from daemon.config.settings import Settings
from daemon.runtime.logs import setup_logging
from daemon.runtime.sdnotify import SystemdNotifier
from daemon.runtime.supervisor import Supervisor


def _drain(ns: NotifySocket) -> list[str]:
    """Every datagram waiting on the socket now."""
    ns.sock.settimeout(0.0)
    out = []
    while True:
        try:
            out.append(ns.sock.recv(4096).decode())
        except (BlockingIOError, TimeoutError):
            return out


async def _pings_within(ns: NotifySocket, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return sum("WATCHDOG=1" in m for m in _drain(ns))


async def test_a_wedged_writer_stops_the_watchdog_pings(tmp_path: Path) -> None:
    ns = NotifySocket()
    port = free_port()
    settings = Settings(
        store=f"sqlite:///{tmp_path}/events.db",
        state_dir=tmp_path,
        http={"listen": f"127.0.0.1:{port}"},
        logging={"level": "warning"},
    )
    # systemd would expect a ping every 400 ms; the daemon pings every 200 ms.
    notifier = SystemdNotifier({"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
    sup = Supervisor(settings, notifier=notifier)
    runner = asyncio.create_task(sup.run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(400):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            assert await _pings_within(ns, 1.5) >= 3, "a healthy daemon pings the watchdog"

            # Wedge the writer thread, as a stuck disk or a lock would.
            release = threading.Event()
            assert sup.ingestor is not None
            wedge = sup.ingestor.writer.submit(release.wait, 60)
            await asyncio.sleep(1.2)  # let pings already decided go out
            _drain(ns)
            assert await _pings_within(ns, 2.0) == 0, "no ping while the writer is wedged"
            # The event loop itself is still serving: only the writer is stuck.
            assert (await client.get("/readyz")).status_code == 200

            release.set()
            await asyncio.wrap_future(wedge)
            assert await _pings_within(ns, 1.5) >= 2, "pings resume once the writer answers"
    finally:
        sup.stop.set()
        await asyncio.wait_for(runner, 60)
        ns.close()


def test_scrubber_hides_known_secrets_and_bearer_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("keyvalue", "info", ["s3cr3t-token-value"])
    log = logging.getLogger("watchkeeper.test")
    log.info("calling with token=%s", "s3cr3t-token-value")
    log.info("header Authorization: Bearer abcdefghijkl")
    try:
        raise RuntimeError("boom s3cr3t-token-value")
    except RuntimeError:
        log.exception("failed")
    out = capsys.readouterr().out
    assert "s3cr3t-token-value" not in out
    assert "abcdefghijkl" not in out
    assert out.count("***") >= 3
    setup_logging("json", "info", ["s3cr3t-token-value"])
    log.info("again s3cr3t-token-value")
    assert "s3cr3t-token-value" not in capsys.readouterr().out


def test_no_secret_reaches_the_daemon_log(tmp_path: Path) -> None:
    secrets = {
        "admin": "admin-tok-4f9a8c2e71",
        "viewer": "viewer-tok-b2d7e95a13",
        "ingest": "ingest-tok-c8e1f04d66",
    }
    (tmp_path / "viewer.token").write_text(secrets["viewer"] + "\n")
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/events.db",
        settings={
            "auth": {
                "tokens": [
                    {"name": "root", "role": "admin", "token": "env:WK_ADMIN_TOKEN"},
                    {"name": "eve", "role": "viewer", "token": f"file:{tmp_path / 'viewer.token'}"},
                ],
                "ingest_token": secrets["ingest"],
            },
            "http": {"ingest_auth": "token"},
            "logging": {"level": "debug", "format": "json"},
        },
    )
    assert wk.child is not None
    assert wk.child.env is not None
    wk.child.env["WK_ADMIN_TOKEN"] = secrets["admin"]
    wk.start()
    try:
        bearer = {name: {"Authorization": f"Bearer {tok}"} for name, tok in secrets.items()}
        body = [{"labels": {"alertname": "SecretsTest", "instance": "h1"}}]
        assert (
            httpx.post(f"{wk.url}/api/v2/alerts", json=body, headers=bearer["ingest"]).status_code
            == 200
        )
        assert httpx.get(f"{wk.url}/api/v1/incidents", headers=bearer["viewer"]).status_code == 200
        # Refusals and errors are the lines most likely to echo what the client sent.
        assert httpx.post(
            f"{wk.url}/api/v1/incidents/x/ack", headers=bearer["viewer"]
        ).status_code in (403, 422)
        assert (
            httpx.get(
                f"{wk.url}/api/v1/incidents",
                headers={"Authorization": "Bearer wrong-" + secrets["admin"]},
            ).status_code
            == 401
        )
        assert (
            httpx.post(
                f"{wk.url}/api/v2/alerts", content=b"{not json", headers=bearer["ingest"]
            ).status_code
            == 400
        )
        assert wk.child.proc is not None
        os.kill(wk.child.proc.pid, signal.SIGHUP)
        time.sleep(1.0)
    finally:
        assert wk.stop() == 0
    log = (tmp_path / "wk" / "watchkeeper.log").read_text()
    # The log is real: it has the lines where a careless change would echo a token.
    assert "IncidentOpened" in log
    # The message, then its fields (daemon/runtime/logs.py), in logfmt or JSON.
    assert re.search(r'msg="refused [^"]*" status=401|"msg": "refused [^"]*", "status": 401', log)
    assert "DeadLetterRecorded" in log
    for name, value in secrets.items():
        assert value not in log, f"the {name} token appeared in the daemon log"
