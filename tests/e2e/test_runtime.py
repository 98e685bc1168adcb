"""The daemon as systemd runs it: sd_notify over a real socket, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from realstack import Watchkeeper, wait_for

from daemon.domain.events import AlertFired
from daemon.engine.store import EventLog


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, *, abstract: bool = False) -> None:
        # sun_path is limited to 108 bytes: keep it short, not under pytest's tmp_path.
        self.dir = tempfile.mkdtemp(prefix="wk-notify-", dir="/tmp")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            # systemd may hand out an abstract address ("@name"), which has no file.
            name = os.path.basename(self.dir)
            self.sock.bind("\0" + name)
            self.path = "@" + name
        else:
            self.path = os.path.join(self.dir, "notify")
            self.sock.bind(self.path)
        self.received: list[str] = []

    def wait_for(self, field: str, timeout: float = 60.0) -> str:
        """Return the first message (in arrival order) with a line starting with `field`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.received[seen:]:
                if any(line.startswith(field) for line in message.splitlines()):
                    self.received.remove(message)
                    return message
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {field!r} within {timeout}s; got {self.received}")
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    ns = NotifySocket()
    try:
        yield ns
    finally:
        ns.close()


def start(
    tmp_path: Path, env: dict[str, str], settings: dict[str, Any] | None = None
) -> Watchkeeper:
    wk = Watchkeeper(tmp_path / "wk", f"sqlite:///{tmp_path}/events.db", settings=settings or {})
    assert wk.child is not None
    assert wk.child.env is not None
    wk.child.env.update(env)
    wk.start()
    return wk


def test_ready_status_and_watchdog_pings(tmp_path: Path, notify: NotifySocket) -> None:
    # WATCHDOG_USEC=600ms: systemd expects a ping at least every 600ms; we ping at half that.
    wk = start(tmp_path, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "600000"})
    try:
        ready = notify.wait_for("READY=1")
        status = [line for line in ready.splitlines() if line.startswith("STATUS=")]
        assert len(status) == 1
        assert status[0].startswith(
            "STATUS=0 open incidents, 0 acknowledged, 0 awaiting approval, 0 alerts firing"
        )
        pings = [notify.wait_for("WATCHDOG=1") for _ in range(3)]
        assert all("STATUS=" in p for p in pings)
    finally:
        assert wk.stop() == 0
    assert notify.wait_for("STOPPING=1")


def test_abstract_notify_socket(tmp_path: Path) -> None:
    notify = NotifySocket(abstract=True)
    try:
        wk = start(tmp_path, {"NOTIFY_SOCKET": notify.path})
        try:
            assert notify.wait_for("READY=1")
        finally:
            assert wk.stop() == 0
    finally:
        notify.close()


def _http_status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_an_in_flight_request(tmp_path: Path, notify: NotifySocket) -> None:
    wk = start(tmp_path, {"NOTIFY_SOCKET": notify.path})
    assert wk.child is not None
    assert wk.child.proc is not None
    notify.wait_for("READY=1")
    body = json.dumps([{"labels": {"alertname": "InFlight", "instance": "h1"}}]).encode()
    head = (
        "POST /api/v2/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    conn = socket.create_connection(("127.0.0.1", wk.port), timeout=60)
    try:
        conn.sendall(head + body[:10])
        # One event loop serves both connections: once a request sent after ours is
        # answered, ours has been read and its handler is waiting for the rest of the body.
        assert httpx.get(f"{wk.url}/readyz", timeout=30).status_code == 200
        wk.child.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        wait_for(lambda: _refuses_connections(wk.port), timeout=30, what="the listener to close")
        assert wk.child.proc.poll() is None, "exited with a request in flight"
        conn.sendall(body[10:])
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    finally:
        conn.close()
    assert _http_status(response) == 200, response
    assert wk.child.proc.wait(timeout=60) == 0
    log = wk.child.log_path.read_text()
    assert "received SIGTERM; draining" in log
    # What got the 200 is in the log on disk.
    store = EventLog(f"sqlite:///{tmp_path}/events.db")
    try:
        fired = [r.event for r in store.read(0, 1000) if isinstance(r.event, AlertFired)]
    finally:
        store.close()
    assert [e.alert.labels["alertname"] for e in fired] == ["InFlight"]


def _config_with_token(wk: Watchkeeper, token: str, **extra: Any) -> None:
    config = yaml.safe_load(wk.config_path.read_text())
    config["auth"] = {"tokens": [{"name": "ops", "role": "admin", "token": token}]}
    config.update(extra)
    wk.config_path.write_text(yaml.safe_dump(config))


def _status(wk: Watchkeeper, token: str) -> int:
    r = httpx.get(
        f"{wk.url}/api/v1/incidents", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return r.status_code


def test_sighup_reloads_tokens_and_refuses_a_bad_config(
    tmp_path: Path, notify: NotifySocket
) -> None:
    settings = {"auth": {"tokens": [{"name": "ops", "role": "admin", "token": "old-token"}]}}
    wk = start(tmp_path, {"NOTIFY_SOCKET": notify.path}, settings)
    assert wk.child is not None
    assert wk.child.proc is not None
    try:
        notify.wait_for("READY=1")
        assert _status(wk, "old-token") == 200
        assert _status(wk, "new-token") == 401

        _config_with_token(wk, "new-token")
        wk.child.proc.send_signal(signal.SIGHUP)
        assert notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert _status(wk, "new-token") == 200
        assert _status(wk, "old-token") == 401

        # A broken file is refused and logged; the running config stays.
        _config_with_token(wk, "newest-token", grouping={"group_by": "alertname"})
        wk.child.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "reload refused" in wk.child.log_path.read_text() if wk.child else None,
            timeout=60,
            what="the refusal in the log",
        )
        line = next(x for x in wk.child.log_path.read_text().splitlines() if "reload refused" in x)
        assert "grouping.group_by: expected a list of label names" in line
        assert "level=error" in line
        assert wk.child.proc.poll() is None
        assert _status(wk, "new-token") == 200
        assert _status(wk, "newest-token") == 401
    finally:
        assert wk.stop() == 0
