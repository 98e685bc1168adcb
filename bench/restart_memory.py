"""Peak memory at restart for the largest state the limits allow, against the unit's MemoryMax.

Builds a SQLite store through the real Ingestor holding as much as the default `limits:`
let a sender make it hold: `max_alerts` firing alerts spread over `max_open_incidents`
incidents, each alert at `max_alert_bytes` of labels and annotations, plus a full page of
refused alerts as dead letters. Then starts `watchkeeper run` on it as a process and reads
its peak RSS (VmHWM in /proc/<pid>/status) once /readyz answers — once from the checkpoint
the builder left, once replaying the whole log — and compares with `MemoryMax=` in
systemd/watchkeeper.service.

    .venv/bin/python bench/restart_memory.py          # the default limits
    .venv/bin/python bench/restart_memory.py 0.1      # a tenth of them, a quick run
    .venv/bin/python bench/restart_memory.py --one-incident   # all alerts in one incident

A viewer's reads follow each restart (every list, and the largest incident's pages), with
the peak after each, since a read can cost more than the restart itself.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.config.limits import LimitsConfig
from daemon.config.settings import GroupingConfig
from daemon.domain import Alert, ReceiveAlert, fingerprint
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "watchkeeper.service"
START = datetime(2026, 1, 1, tzinfo=UTC)
# Every list a viewer can ask for at the full hot set; some are whole by design (API v2).
VIEWER_READS = (
    "/api/v1/incidents",
    "/",
    "/api/v1/silences",
    "/api/v1/actions",
    "/api/v1/dead-letters?limit=1000",
    "/api/v1/events?limit=1000",
    "/api/v2/alerts",
    "/api/v2/alerts/groups",
)


def memory_max() -> int:
    """MemoryMax= of the unit, in bytes."""
    found = re.search(r"^MemoryMax=(\d+)([KMG]?)", UNIT.read_text(), re.M)
    assert found is not None, "no MemoryMax= in the unit"
    return int(found[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[found[2]]


def heavy_alert(i: int, incidents: int, limits: LimitsConfig) -> Alert:
    """Alert number i, its labels and annotations filling limits.max_alert_bytes."""
    labels = {"alertname": f"Flood{i % incidents:05d}", "instance": f"host{i:06d}"}
    used = sum(len(k) + len(v) for k, v in labels.items()) + len("pad") + len("description")
    room = limits.max_alert_bytes - used
    pad = min(room // 2, limits.max_label_value_bytes)
    labels["pad"] = "p" * pad
    annotations = {"description": "d" * min(room - pad, limits.max_annotation_value_bytes)}
    return Alert(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations=annotations,
        starts_at=START,
        ends_at=START + limits.max_lease,
        source="bench",
    )


async def build(path: Path, scale: float, one: bool) -> tuple[int, int, int, float]:
    """Fill the store; return (alerts held, incidents, dead letters, seconds)."""
    limits = LimitsConfig()
    alerts = int(limits.max_alerts * scale)
    # `one`: every alert in one incident (max_alerts_per_incident is max_alerts by default).
    incidents = 1 if one else max(1, int(limits.max_open_incidents * scale))
    log = EventLog(f"sqlite:///{path}")
    ing = Ingestor(log, GroupingConfig().policy(limits.state_limits()), lambda: START)
    await ing.start()
    started = time.perf_counter()
    # The full hot set, then as many refused alerts as the dead-letter page keeps.
    total = alerts + 1000 if scale >= 1 else alerts
    for lo in range(0, total, 256):
        await ing.submit(
            [ReceiveAlert(heavy_alert(i, incidents, limits)) for i in range(lo, min(lo + 256, total))]
        )
    held, opened = len(ing.world.alerts), len(ing.world.incidents)
    letters = len(ing.projections.dead_letters)
    await ing.close()
    log.close()
    return held, opened, letters, time.perf_counter() - started


def detail_reads(port: int) -> tuple[str, ...]:
    """The pages of the incident holding the most alerts."""
    page = httpx.get(f"http://127.0.0.1:{port}/api/v1/incidents", timeout=60).json()
    if not page["incidents"]:
        return ()
    big = max(page["incidents"], key=lambda i: i.get("alerts_total", 0))["id"]
    return (
        f"/api/v1/incidents/{big}",
        f"/incidents/{big}",
        f"/api/v1/incidents/{big}/story",
        f"/api/v1/incidents/{big}/export",
        f"/api/v1/incidents/{big}/alerts?limit=1000",  # the largest page a viewer can ask
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(found[1]) if found else 0


def restart_peak(store: Path, workdir: Path) -> tuple[float, int, int, int]:
    """Start the daemon on the store: seconds to ready, and in bytes VmHWM once ready,
    VmHWM after the viewer's reads, VmRSS then."""
    port = free_port()
    cfg = workdir / "wk.yaml"
    cfg.write_text(
        f"store: sqlite:///{store}\nstate_dir: {workdir}\nhttp:\n  listen: 127.0.0.1:{port}\n"
        "logging:\n  level: warning\ntuning:\n  tick_interval: 1h\n"
    )
    exe = Path(sys.executable).parent / "watchkeeper"
    t0 = time.perf_counter()
    errors = workdir / "daemon.stderr"
    proc = subprocess.Popen(
        [str(exe), "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=errors.open("wb"),
        cwd=ROOT,
    )
    try:
        while True:
            if proc.poll() is not None:
                said = errors.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"daemon exited with {proc.returncode}: " + " | ".join(said))
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                    ready = time.perf_counter() - t0
                    at_ready = status_kb(proc.pid, "VmHWM") * 1024
                    # The requests a viewer (or karma, Grafana, amtool) makes, then the figures.
                    for path in VIEWER_READS + detail_reads(port):
                        t = time.perf_counter()
                        r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=120)
                        took = time.perf_counter() - t
                        peak = status_kb(proc.pid, "VmHWM") / 1024
                        print(f"  {path:<34} {r.status_code} {len(r.content) / 1e6:>6.1f} MB"
                              f" {took:>5.2f} s peak so far {peak:.0f} MB", flush=True)
                    return (
                        ready,
                        at_ready,
                        status_kb(proc.pid, "VmHWM") * 1024,
                        status_kb(proc.pid, "VmRSS") * 1024,
                    )
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("not ready after 600 s")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(60)


def drop_checkpoints(store: Path) -> None:
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM stored_snapshots")


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--one-incident"]
    one = "--one-incident" in sys.argv
    scale = float(args[0]) if args else 1.0
    cap = memory_max()
    limits = LimitsConfig()
    print(
        f"limits: max_alerts={limits.max_alerts} max_open_incidents={limits.max_open_incidents} "
        f"max_alerts_per_incident={limits.max_alerts_per_incident} "
        f"max_alert_bytes={limits.max_alert_bytes}; scale {scale}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="wk-restart-mem-") as tmp:
        work = Path(tmp)
        store = work / "events.db"
        held, incidents, letters, build_s = asyncio.run(build(store, scale, one))
        mb = store.stat().st_size / 1e6
        print(
            f"built: {held} alerts in {incidents} incidents, {letters} dead letters; "
            f"store {mb:.0f} MB in {build_s:.0f}s",
            flush=True,
        )
        rows = [("checkpoint", *restart_peak(store, work))]
        drop_checkpoints(store)
        rows.append(("full replay", *restart_peak(store, work)))
    print(
        f"\n{'restart':>12} {'ready s':>8} {'peak at ready MB':>17} {'peak after reads MB':>20}"
        f" {'RSS MB':>8} {'MemoryMax MB':>13}"
    )
    for name, ready, at_ready, hwm, rss in rows:
        print(
            f"{name:>12} {ready:>8.1f} {at_ready / 2**20:>17.0f} {hwm / 2**20:>20.0f}"
            f" {rss / 2**20:>8.0f} {cap / 2**20:>13.0f}"
        )
    worst = max(r[3] for r in rows)
    verdict = "under" if worst < cap else "OVER"
    print(f"peak {worst / 2**20:.0f} MB is {verdict} MemoryMax ({cap / 2**20:.0f} MB)")
    sys.exit(0 if worst < cap else 1)


if __name__ == "__main__":
    main()
