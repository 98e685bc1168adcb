"""Five simulated days of a realistic alert mix through the real daemon, hour by hour.

The Supervisor runs in-process (real HTTP server, real SQLite store, real writer thread)
with an injected clock that this bench advances one simulated minute at a time. Alerts are
posted over HTTP the way Prometheus does (every firing alert re-sent each minute with a
lease of 4 minutes): flapping alerts, storms, long incidents, resolutions and silences.
Each simulated hour prints RSS, open asyncio tasks, store size and events; the summary
compares day 1 with day 5.

    .venv/bin/python bench/soak.py            # 5 days
    .venv/bin/python bench/soak.py --days 1   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.config.settings import Settings
from daemon.runtime.supervisor import Supervisor


class SimClock:
    """The simulated time the daemon sees."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def store_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


class AlertMix:
    """Which alerts fire at a given simulated minute."""

    def __init__(self, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.flapping = {f"web{i:02d}": False for i in range(40)}
        self.long = {f"db{i}": (i * 7 * 60, i * 7 * 60 + 48 * 60) for i in range(6)}

    def firing(self, minute: int) -> list[dict[str, str]]:
        rng = self.rng
        out = []
        for host in self.flapping:
            if rng.random() < 0.04:  # a flip every ~25 minutes per host
                self.flapping[host] = not self.flapping[host]
            if self.flapping[host]:
                out.append({"alertname": "HighCPU", "instance": host, "severity": "warning"})
        day_minute = minute % (24 * 60)
        for start in (3 * 60, 15 * 60):  # two storms a day, 20 minutes each
            if start <= day_minute < start + 20:
                out += [
                    {
                        "alertname": "EndpointDown",
                        "instance": f"edge{i:03d}",
                        "severity": "critical",
                    }
                    for i in range(400)
                ]
        for host, (begin, end) in self.long.items():
            if begin <= minute % (5 * 24 * 60) < end:
                out.append({"alertname": "DiskFilling", "instance": host, "severity": "warning"})
        if minute % 60 < 45:
            out.append({"alertname": "BackupLate", "instance": "backup1", "severity": "info"})
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def soak(days: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wk-soak-"))
    store = tmp / "events.db"
    port = free_port()
    settings = Settings(
        store=f"sqlite:///{store}",
        state_dir=tmp,
        http={"listen": f"127.0.0.1:{port}"},
        grouping={"group_by": ["alertname", "instance"], "reopen_window": "30m"},
        logging={"level": "warning"},
        tuning={"tick_interval": "50ms"},
    )
    clock = SimClock()
    # As `watchkeeper run` does: this process is the daemon's (collector, allocator).
    sup = Supervisor(settings, clock=clock, owns_process=True)
    runner = asyncio.create_task(sup.run(), name="daemon")
    url = f"http://127.0.0.1:{port}"
    mix = AlertMix()
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
        ing = sup.ingestor
        assert ing is not None
        last_pos = 0
        started = time.perf_counter()
        previous: set[tuple[str, str]] = set()
        for minute in range(days * 24 * 60):
            clock.now += timedelta(minutes=1)
            firing = mix.firing(minute)
            now = clock.now
            keys = {(a["alertname"], a["instance"]) for a in firing}
            body = [
                {
                    "labels": a,
                    "annotations": {"summary": f"{a['alertname']} on {a['instance']}"},
                    "startsAt": (now - timedelta(minutes=1)).isoformat(),
                    "endsAt": (now + timedelta(minutes=4)).isoformat(),
                }
                for a in firing
            ]
            # Prometheus sends a cleared alert once more with endsAt = now.
            body += [
                {
                    "labels": {"alertname": n, "instance": i},
                    "startsAt": (now - timedelta(minutes=2)).isoformat(),
                    "endsAt": now.isoformat(),
                }
                for n, i in previous - keys
                if n != "EndpointDown"  # storms end by lease expiry instead
            ]
            previous = keys
            for i in range(0, len(body), 256):
                r = await client.post("/api/v2/alerts", json=body[i : i + 256])
                r.raise_for_status()
            if minute % (4 * 60) == 0:
                await client.post(
                    "/api/v1/silences",
                    json={
                        "matchers": ['alertname="HighCPU"', 'instance=~"web0.*"'],
                        "duration": "1h",
                        "comment": "soak",
                    },
                )
            await ing.tick()
            if (minute + 1) % 60 == 0:
                hour = (minute + 1) // 60
                pos = ing.world.position
                row = {
                    "hour": hour,
                    "rss": rss_mb(),
                    "tasks": len(asyncio.all_tasks()),
                    "store": store_mb(store),
                    "events": pos,
                    "hour_events": pos - last_pos,
                    "incidents": len(ing.world.incidents),
                    "alerts": len(ing.world.alerts),
                    "silences": len(ing.world.silences),
                }
                last_pos = pos
                rows.append(row)
                print(
                    f"day {1 + (hour - 1) // 24} hour {hour:>3}: rss {row['rss']:6.1f} MB  tasks {row['tasks']:>2}  "
                    f"store {row['store']:7.1f} MB  events {pos:>8,} (+{row['hour_events']:>5,})  "
                    f"hot incidents {row['incidents']:>4}  alerts {row['alerts']:>4}  silences {row['silences']}",
                    flush=True,
                )
        elapsed = time.perf_counter() - started
    sup.stop.set()
    await runner
    summarize(rows, elapsed, days)


def summarize(rows: list[dict[str, Any]], elapsed: float, days: int) -> None:
    def day(n: int) -> list[dict[str, Any]]:
        return [r for r in rows if (r["hour"] - 1) // 24 == n - 1]

    print()
    print(f"simulated {days} day(s) in {elapsed:.0f} s of real time")
    first, last = day(1), day(days)
    if days >= 2 and first and last:
        rss1 = sum(r["rss"] for r in first[6:]) / max(1, len(first[6:]))  # after warm-up
        rssn = sum(r["rss"] for r in last) / len(last)
        print(
            f"RSS day 1 (after 6 h warm-up) {rss1:.1f} MB, day {days} {rssn:.1f} MB: growth {100 * (rssn - rss1) / rss1:+.1f}% (target < 5%)"
        )
        print(
            f"tasks day 1 max {max(r['tasks'] for r in first)}, day {days} max {max(r['tasks'] for r in last)}"
        )
        means = [sum(r["rss"] for r in day(n)) / max(1, len(day(n))) for n in range(1, days + 1)]
        print("RSS mean by day: " + ", ".join(f"day {n + 1} {m:.1f} MB" for n, m in enumerate(means)))
        if days >= 3:
            print(
                f"RSS day 2 -> day {days}: {100 * (means[-1] - means[1]) / means[1]:+.1f}% "
                "(bounded histories — 500 closed incidents, investigations, actions — fill during day 1)"
            )
        ev1 = sum(r["hour_events"] for r in first)
        evn = sum(r["hour_events"] for r in last)
        print(
            f"events day 1 {ev1:,}, day {days} {evn:,}; store {rows[-1]['store']:.1f} MB for {rows[-1]['events']:,} events "
            f"({1e6 * rows[-1]['store'] / max(1, rows[-1]['events']):.0f} bytes/event)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("WATCHKEEPER_LOGGING__LEVEL", "warning")
    asyncio.run(soak(args.days))


if __name__ == "__main__":
    main()
