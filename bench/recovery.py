"""Cold start: time from process start to /readyz OK on stores of 100k and 1M events.

Builds each store in-process through the real Ingestor (a realistic mix: alerts firing,
renewing, resolving; incidents opening, resolving, closing; silences), then starts
`watchkeeper run` on it and measures how long until /readyz answers 200 — once with the
checkpoints the daemon writes, once with them removed (full replay), side by side.

    .venv/bin/python bench/recovery.py            # 100k and 1M
    .venv/bin/python bench/recovery.py 20000      # a quick run
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.domain import Alert, ReceiveAlert, Tick, fingerprint
from daemon.domain.state import GroupingPolicy
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog

ROOT = Path(__file__).resolve().parents[1]


class SimClock:
    """A clock the builder advances."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def build(path: Path, target: int) -> tuple[int, float]:
    """Fill a SQLite store with about `target` events; return (events, seconds)."""
    clock = SimClock()
    log = EventLog(f"sqlite:///{path}")
    policy = GroupingPolicy(group_by=("alertname", "instance"), reopen_window=timedelta(minutes=10))
    ing = Ingestor(log, policy, clock, checkpoint_every=20_000)
    await ing.start()
    rng = random.Random(7)
    started = time.perf_counter()
    hosts = [f"host{i:04d}" for i in range(2000)]
    names = ["HighCPU", "DiskFull", "MemoryPressure", "ServiceDown", "EndpointDown"]
    while ing.world.position < target:
        cmds = []
        for _ in range(256):
            labels = {
                "alertname": rng.choice(names),
                "instance": rng.choice(hosts),
                "severity": rng.choice(["warning", "critical"]),
            }
            resolved = rng.random() < 0.45
            ends = (
                clock.now - timedelta(seconds=1) if resolved else clock.now + timedelta(minutes=4)
            )
            cmds.append(
                ReceiveAlert(
                    Alert(
                        fingerprint=fingerprint(labels),
                        labels=labels,
                        annotations={"summary": "synthetic"},
                        starts_at=clock.now - timedelta(minutes=1),
                        ends_at=ends,
                        status="resolved" if resolved else "firing",
                        source="bench",
                    )
                )
            )
        await ing.submit(cmds)
        clock.now += timedelta(seconds=20)
        await ing.submit([Tick()])
    await ing.close()
    log.close()
    return ing.world.position, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_to_ready(store: Path, workdir: Path) -> float:
    """Start the daemon on the store; seconds from spawn until /readyz returns 200."""
    port = free_port()
    cfg = workdir / "wk.yaml"
    cfg.write_text(
        f"store: sqlite:///{store}\nstate_dir: {workdir}\nhttp:\n  listen: 127.0.0.1:{port}\n"
        "grouping:\n  group_by: [alertname, instance]\n  reopen_window: 10m\n"
        "logging:\n  level: warning\n"
    )
    exe = Path(sys.executable).parent / "watchkeeper"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("not ready after 300 s")
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)


def drop_checkpoints(store: Path) -> None:
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM stored_snapshots")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="wk-recovery-") as tmp:
            work = Path(tmp)
            store = work / "events.db"
            events, build_s = asyncio.run(build(store, size))
            mb = os.path.getsize(store) / 1e6
            with_cp = min(time_to_ready(store, work) for _ in range(3))
            drop_checkpoints(store)
            full = time_to_ready(store, work)
            rows.append((events, mb, build_s, with_cp, full))
            print(
                f"built {events:,} events ({mb:.0f} MB) in {build_s:.0f}s; "
                f"ready in {with_cp:.2f}s with checkpoints, {full:.2f}s replaying everything",
                flush=True,
            )
    print()
    print(
        f"{'events':>10} {'store MB':>9} {'ready (checkpoint)':>19} {'ready (full replay)':>20} {'ratio':>7}"
    )
    for events, mb, _, with_cp, full in rows:
        print(f"{events:>10,} {mb:>9.0f} {with_cp:>18.2f}s {full:>19.2f}s {full / with_cp:>6.1f}x")
    print("target: 1M events ready in under 5 s")


if __name__ == "__main__":
    main()
