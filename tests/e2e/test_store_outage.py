"""The event store goes away and comes back: the daemon refuses fast, tells the truth, recovers.

A private PostgreSQL (its own, so it may be stopped) under a daemon process with real time;
alerts keep arriving over HTTP and an escalation level comes due while the server is down
(`pg_ctl -m immediate`, as in a crash or a failover).

Why a 35-second outage stands for the long one in CI. The issue's 2.5-minute outage never
recovered for three reasons, each of which grew with the outage's length:
1. eventsourcing's recorders retried every call ten times, each after waiting the pool
   timeout (~52 s at 5 s), holding the writer thread;
2. an outage longer than that window made the rebuild after the failed commit raise, which
   ended the commit pipeline's task: intake hung until a restart (a 10 s outage stayed
   inside the window, so it "recovered");
3. psycopg_pool's own reconnection backs off 1, 2, 4 … 128 s: measured here with the pool
   replacement disabled, a 35 s outage still recovered in 1.4 s but a 3-minute one did not
   within 10 s.
The window of (1) and (2) scales with `tuning.store_connect_timeout`: at 2 s it is ~22 s, so
the 35 s variant is past it, as the 2.5-minute outage was past 52 s. (3) cannot be made
faster from outside psycopg_pool; recovery no longer uses the old pool at all (a direct
connection, then a fresh pool: `tests/integration/test_store_pool.py` proves a pool that
cannot reconnect is replaced), and the only state that grows during an outage now is the
recovery backoff, capped at `tuning.reconnect_max_backoff` (2 s here) within seconds. So the
35 s variant runs the same steady state as a 3-minute outage; the 3-minute one is kept,
marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import realstack
from chatstubs import ChatStub
from realstack import PostgresControl, Watchkeeper, wait_for

SECRET = "hook-secret"
ESCALATION_DELAY = 5  # seconds: comes due while the server is down
COMMIT_TIMEOUT = 5.0  # tuning.commit_timeout's default


@pytest.fixture
def pg() -> Iterator[PostgresControl]:
    try:
        with realstack.private_postgres_control() as ctl:
            yield ctl
    except realstack.Unavailable as e:
        pytest.skip(f"cannot start a private PostgreSQL to stop and start: {e}")


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with ChatStub(webhook_secret=SECRET) as s:
        yield s


def pages(stub: ChatStub) -> list[str]:
    """Escalation pages of the `Escalate` incident the webhook received."""
    out = []
    for h in stub.at(stub.WEBHOOK):
        body = h.body
        if body.get("event") in ("incident_opened", "escalated") and "Escalate" in str(body):
            out.append(body["event"])
    return out


@dataclass
class Intake:
    """Posts new alerts, one request after another, until stopped; remembers every answer.

    Request n carries alerts `i{n}-0` … `i{n}-{per_request - 1}`.
    """

    url: str
    per_request: int = 1
    padding: int = 0  # bytes of annotation per alert, to fill a disk
    answers: list[tuple[int, float, float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                n += 1
                begun = time.monotonic()
                alerts = [
                    {
                        "labels": {"alertname": "Load", "instance": f"i{n}-{k}"},
                        "annotations": {"detail": "x" * self.padding},
                    }
                    for k in range(self.per_request)
                ]
                try:
                    r = client.post(f"{self.url}/api/v2/alerts", json=alerts)
                    status, retry = r.status_code, r.headers.get("retry-after", "")
                except httpx.HTTPError as e:
                    status, retry = 0, type(e).__name__
                self.answers.append((n, begun, time.monotonic(), status, retry))
                time.sleep(0.05)


@dataclass
class Readiness:
    """Samples /readyz every 200 ms."""

    url: str
    samples: list[tuple[float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=5)
                self.samples.append((time.monotonic(), r.status_code, r.text))
            except httpx.HTTPError as e:
                self.samples.append((time.monotonic(), 0, type(e).__name__))
            time.sleep(0.2)


def _status_cli(url: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", "from daemon.cli.main import main; main()", "--url", url, "status"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout


def _alert_instances(wk: Watchkeeper) -> set[str]:
    out: set[str] = set()
    for inc in wk.incidents():
        for a in wk.incident_alerts(inc["id"]):
            if a["labels"].get("alertname") == "Load":
                out.add(a["labels"]["instance"])
    return out


def _outage(
    pg: PostgresControl,
    stub: ChatStub,
    tmp_path: Path,
    outage: float,
    tuning: dict[str, str] | None = None,
) -> None:
    wk = Watchkeeper(
        tmp_path / "wk",
        pg.server.url(),
        settings={
            "tuning": tuning or {},
            "notifications": {
                "channels": {
                    "pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK), "secret": SECRET}
                },
                "policies": [
                    {
                        "name": "page",
                        "match": ['alertname="Escalate"'],
                        "levels": [
                            {"channels": ["pager"]},
                            {"channels": ["pager"], "delay": f"{ESCALATION_DELAY}s"},
                        ],
                    }
                ],
            }
        },
    )
    wk.start()
    try:
        _ride_out(wk, pg, stub, outage)
    finally:
        wk.stop()
    assert stub.problems() == []


def _ride_out(wk: Watchkeeper, pg: PostgresControl, stub: ChatStub, outage: float) -> None:
    intake, ready = Intake(wk.url), Readiness(wk.url)
    threads = [threading.Thread(target=intake.run), threading.Thread(target=ready.run)]
    try:
        r = httpx.post(
            f"{wk.url}/api/v2/alerts", json=[{"labels": {"alertname": "Escalate"}}], timeout=30
        )
        assert r.status_code == 200
        wait_for(lambda: pages(stub) == ["incident_opened"], timeout=30, what="the first page")
        for t in threads:
            t.start()
        time.sleep(1.0)

        pg.stop()
        stopped = time.monotonic()
        # Told within seconds, by /readyz, /healthz, /metrics and `watchkeeper status`.
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 503,
            timeout=COMMIT_TIMEOUT + 3, what="/readyz 503 after the store went away",
        )
        detected = time.monotonic() - stopped
        health = httpx.get(f"{wk.url}/healthz", timeout=5).json()
        assert health["ready"] is False
        assert health["store_health"]["ok"] is False, health
        assert "event store unavailable" in health["store_health"]["problem"]
        metrics = httpx.get(f"{wk.url}/metrics", timeout=5).text
        assert "watchkeeper_store_up 0.0" in metrics
        assert "watchkeeper_store_seconds_since_last_commit " in metrics
        assert "UNAVAILABLE" in _status_cli(wk.url)
        # Reading the log while it is gone: a 503 that says so, not a 500 or a hang.
        r = httpx.get(f"{wk.url}/api/v1/events", timeout=15)
        assert r.status_code == 503, r.text
        assert "event store unavailable" in r.json()["error"]

        time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
        restarting = time.monotonic()
        # The escalation came due while down and could not fire: nothing committed.
        assert pages(stub) == ["incident_opened"], wk.log_tail()
        pg.start()
        back = time.monotonic()
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 200,
            timeout=10, what="/readyz 200 within 10 s of the store coming back",
        )
        recovered = time.monotonic() - back
        time.sleep(2.0)  # intake goes on after recovery
    finally:
        intake.stop.set()
        ready.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(timeout=70)
    assert wk.child is not None
    assert wk.child.running, wk.log_tail()
    # The escalation fires exactly once, after the store is back.
    wait_for(lambda: len(pages(stub)) >= 2, timeout=30, what="the escalation page")
    time.sleep(1.5)  # a second firing would show up by now
    assert pages(stub) == ["incident_opened", "escalated"], wk.log_tail()
    # Level 0's deadline (due at once) and level 1's: each fired exactly once.
    fired = [e for e in wk.events() if e["type"] == "DeadlineFired"]
    assert len(fired) == 2, fired
    assert len({e["stream"] for e in fired}) == 2, fired

    answers = intake.answers
    assert {a[3] for a in answers} <= {200, 503}, [a for a in answers if a[3] not in (200, 503)]
    refused = [a for a in answers if a[3] == 503]
    assert refused, "no request was refused while the store was down"
    # Refused fast, with Retry-After; never a hang until the client gives up.
    slowest = max(a[2] - a[1] for a in refused)
    assert slowest <= COMMIT_TIMEOUT + 1.5, slowest
    assert all(a[4].isdigit() for a in refused)
    # No 2xx for anything sent and answered while the store was down.
    lies = [a for a in answers if a[3] == 200 and a[1] > stopped and a[2] < back]
    assert not lies, lies
    accepted = {f"i{a[0]}-0" for a in answers if a[3] == 200}
    assert any(a[1] > back for a in answers if a[3] == 200), "no intake after recovery"
    missing = accepted - _alert_instances(wk)
    assert not missing, f"acknowledged but not in an incident: {sorted(missing)}"
    # /readyz said 503 all the while the store was down (once the outage was noticed).
    during = [s for s in ready.samples if stopped + detected < s[0] < restarting]
    assert during
    assert all(s[1] == 503 for s in during), [s for s in during if s[1] != 503]
    assert recovered <= 10.0
    print(  # figures for the report
        f"outage={outage:.0f}s detected_after={detected:.1f}s recovered_after={recovered:.1f}s"
        f" requests={len(answers)} ok={len(accepted)} refused={len(refused)}"
        f" slowest_refusal={slowest:.2f}s"
    )


def test_postgres_down_10s_refuses_fast_and_recovers(
    pg: PostgresControl, stub: ChatStub, tmp_path: Path
) -> None:
    _outage(pg, stub, tmp_path, outage=12)


def test_postgres_down_past_the_pools_own_reconnect_backoff_recovers_within_seconds(
    pg: PostgresControl, stub: ChatStub, tmp_path: Path
) -> None:
    # Past the old retry window (10 x the 2 s pool timeout), backoff at its cap in seconds.
    tuning = {"store_connect_timeout": "2s", "reconnect_max_backoff": "2s"}
    _outage(pg, stub, tmp_path, outage=35, tuning=tuning)


@pytest.mark.slow
def test_postgres_down_3_minutes_recovers_within_seconds(
    pg: PostgresControl, stub: ChatStub, tmp_path: Path
) -> None:
    _outage(pg, stub, tmp_path, outage=180)


# --- SQLite on a disk that fills up ----------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: a file system that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_sqlite_disk_full_refuses_reports_and_recovers_when_space_returns(
    small_fs: Path, tmp_path: Path
) -> None:
    wk = Watchkeeper(tmp_path / "wk", f"sqlite:///{small_fs / 'events.db'}")
    wk.start()
    try:
        _fill_and_free(wk, small_fs)
    finally:
        wk.stop()


def test_an_idle_daemon_notices_the_store_is_gone_and_back(
    pg: PostgresControl, tmp_path: Path
) -> None:
    wk = Watchkeeper(tmp_path / "wk", pg.server.url())
    wk.start()
    try:
        pg.stop()
        # No traffic: the health loop's probe (every 5 s) is what notices.
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 503,
            timeout=15, what="/readyz 503 on an idle daemon after the store went away",
        )
        assert "event store unavailable" in httpx.get(f"{wk.url}/readyz", timeout=5).text
        pg.start()
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 200,
            timeout=10, what="/readyz 200 within 10 s of the store coming back",
        )
        r = httpx.post(
            f"{wk.url}/api/v2/alerts", json=[{"labels": {"alertname": "Idle"}}], timeout=30
        )
        assert r.status_code == 200
        assert wk.incidents("open")
    finally:
        wk.stop()


def _fill_and_free(wk: Watchkeeper, small_fs: Path) -> None:
    # Leave a little room: a few dozen requests fill it.
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * max(0, _free(small_fs) - 400_000))
    intake, ready = Intake(wk.url, per_request=10, padding=2000), Readiness(wk.url)
    threads = [threading.Thread(target=intake.run), threading.Thread(target=ready.run)]
    try:
        for t in threads:
            t.start()
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 503,
            timeout=60, what="/readyz 503 once the disk is full",
        )
        full = time.monotonic()
        health = httpx.get(f"{wk.url}/healthz", timeout=5).json()
        assert health["store_health"]["ok"] is False, health
        assert "full" in health["store_health"]["problem"], health
        assert "watchkeeper_store_up 0.0" in httpx.get(f"{wk.url}/metrics", timeout=5).text
        time.sleep(3.0)
        assert wk.child is not None
        assert wk.child.running, wk.log_tail()
        freeing = time.monotonic()
        filler.unlink()  # space returns
        wait_for(
            lambda: httpx.get(f"{wk.url}/readyz", timeout=5).status_code == 200,
            timeout=10, what="/readyz 200 within 10 s of space returning",
        )
        recovered = time.monotonic() - freeing
        time.sleep(2.0)
    finally:
        intake.stop.set()
        ready.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(timeout=70)
    assert wk.child.running, wk.log_tail()
    answers = intake.answers
    assert {a[3] for a in answers} <= {200, 503}, [a for a in answers if a[3] not in (200, 503)]
    refused = [a for a in answers if a[3] == 503]
    assert refused
    slowest = max(a[2] - a[1] for a in refused)
    assert slowest <= COMMIT_TIMEOUT + 1.5, slowest
    assert any(a[1] > freeing for a in answers if a[3] == 200), "no intake after recovery"
    accepted = {f"i{a[0]}-{k}" for a in answers if a[3] == 200 for k in range(10)}
    instances = _alert_instances(wk)
    missing = accepted - instances
    assert not missing, f"acknowledged but not in an incident: {sorted(missing)[:20]}"
    during = [s for s in ready.samples if full < s[0] < freeing]
    assert during
    assert all(s[1] == 503 for s in during), [s for s in during if s[1] != 503]
    print(  # figures for the report
        f"sqlite disk full: recovered_after={recovered:.1f}s requests={len(answers)}"
        f" refused={len(refused)} slowest_refusal={slowest:.2f}s"
    )
