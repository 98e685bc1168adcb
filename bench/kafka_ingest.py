"""Kafka ingest benchmark: a produced backlog to committed state, in messages per second.

Starts tansu (Kafka-compatible, memory storage), produces a backlog with kcat, then starts a
watchkeeper process (SQLite store in a temp dir) whose Kafka source reads it. Timing runs
from the daemon answering /readyz to every record being committed (the source's message
count reaching the backlog and its lag reaching 0), for two workloads:

- alerts-distinct: one alert object per record (format `alert`), all distinct, so each
  record becomes an AlertFired event (the worst case);
- alerts-repeating: the same record count over a few thousand alerts re-sent in turn, as
  Prometheus re-sends firing alerts (repeats record nothing);
- samples: one metric sample per record (format `samples`) over many series through a
  threshold rule (with `for:` and hysteresis) and an absence rule; most samples change
  nothing and record nothing, crossings record rule events and alerts.

Run: `.venv/bin/python bench/kafka_ingest.py [--alerts N] [--samples N] [--partitions P]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import brokers  # noqa: E402  (lives with the tests; shared by tests and benchmarks)
import realstack  # noqa: E402

# Throughput benchmarks hold every distinct alert: the hot-set limits are lifted here.
UNBOUNDED = {"max_alerts": 10**7, "max_open_incidents": 10**7, "max_alerts_per_incident": 10**7}


def alert_records(n: int, distinct: int | None = None) -> list[bytes]:
    """n alert records, the size of a typical Prometheus alert; `distinct` label sets (all
    distinct by default), re-sent in turn as Prometheus re-sends firing alerts."""
    out = []
    distinct = distinct or n
    for j in range(n):
        i = j % distinct
        a = {
            "labels": {
                "alertname": f"BenchAlert{i % 50}",
                "instance": f"host-{i}.example:9100",
                "job": "node",
                "severity": ("warning", "critical")[i % 2],
            },
            "annotations": {
                "summary": f"host-{i} has a problem",
                "runbook_url": "https://rb.example/x",
            },
        }
        out.append(json.dumps(a, separators=(",", ":")).encode())
    return out


def sample_records(n: int, series: int, seed: int = 7) -> list[bytes]:
    """n samples over `series` devices; about 1 in 50 devices runs hot for a while."""
    rnd = random.Random(seed)
    hot = {d for d in range(series) if d % 50 == 0}
    t0 = time.time() - n / 1000
    out = []
    for i in range(n):
        d = i % series
        base = 85.0 if d in hot and (i // series) % 4 < 2 else 40.0
        s = {
            "metric": "temperature",
            "labels": {"site": f"plant{d % 7}", "device": f"dev{d}"},
            "value": round(base + rnd.uniform(-2, 2), 2),
            "ts": round(t0 + i / 1000, 3),
        }
        out.append(json.dumps(s, separators=(",", ":")).encode())
    return out


def committed(db: Path, topic: str) -> int:
    """Records of `topic` committed to the event store, from its tracking table."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT notification_id FROM tracking WHERE application_name LIKE ?",
                (f"kafka:{topic}:%",),
            ).fetchall()
    except sqlite3.OperationalError:
        return 0  # not created yet
    return sum(r[0] + 1 for r in rows)


def run(name: str, fmt: str, records: list[bytes], args: argparse.Namespace, work: Path) -> float:
    """Produce the backlog, start a daemon on it, return messages/s to committed state."""
    broker = brokers.Tansu(work / f"tansu-{name}")
    broker.start()
    try:
        topic = f"bench-{name}"
        broker.create_topic(topic, args.partitions)
        kcat = brokers.Kcat(broker.bootstrap, work / f"kcat-{name}")
        t = time.monotonic()
        kcat.produce(topic, records)
        print(f"{name}: produced {len(records)} records in {time.monotonic() - t:.1f}s", flush=True)
        settings: dict[str, Any] = {
            "grouping": {"group_by": ["alertname"]},
            "limits": UNBOUNDED,
            "logging": {"level": "warning"},
            "sources": {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap,
                    "group_id": None,
                    "max_batch": args.max_batch,
                    "topics": [{"topic": topic, "format": fmt}],
                }
            },
            "rules": [
                {
                    "alert": "HighTemperature",
                    "metric": "temperature",
                    "condition": "> 80",
                    "clear": 75,
                    "for": "1s",
                    "labels": {"severity": "warning"},
                },
                {"alert": "DeviceSilent", "metric": "temperature", "absent_for": "10m"},
            ],
        }
        wk = realstack.Watchkeeper(
            work / f"wk-{name}", f"sqlite:///{work / name / 'events.db'}", settings
        )
        if args.profile:
            # cProfile around the daemon; the stats are written when it exits (SIGTERM).
            assert wk.child is not None
            out = f"{args.profile}.{name}"
            code = (
                "import cProfile, sys; from daemon.cli.main import main; "
                f"sys.argv = ['watchkeeper', 'run', '--config', {str(wk.config_path)!r}]; "
                f"cProfile.run('main()', {out!r})"
            )
            wk.child.argv = [sys.executable, "-c", code]
        assert wk.child is not None
        wk.child.start()
        spawned = time.monotonic()
        db = work / name / "events.db"
        first: tuple[float, int] | None = None
        try:
            # Progress from the tracking table itself (read-only), so polling costs the
            # daemon nothing: records committed = sum over partitions of (last offset + 1).
            # The clock starts at the first commit seen (start-up is not ingest), and the
            # records committed by then are left out of the count.
            while (done := committed(db, topic)) < len(records):
                if first is None and done > 0:
                    first = (time.monotonic(), done)
                if time.monotonic() - spawned > args.timeout:
                    raise TimeoutError(f"{name}: only {done} of {len(records)} committed")
                wk.child.check_alive()
                time.sleep(0.01)
            end = time.monotonic()
            wk.wait_ready()
            status = wk.get("/api/v1/status")
        finally:
            wk.stop()
        t0, c0 = first if first is not None else (spawned, 0)
        seconds = end - t0
        events = sum(status["event_counts"].values())
        rate = (len(records) - c0) / seconds
        print(
            f"{name}: {len(records)} records committed in {seconds:.2f}s = {rate:,.0f} messages/s "
            f"({events} events recorded, {status['alerts_firing']} alerts firing, "
            f"{args.partitions} partitions, max_batch {args.max_batch})",
            flush=True,
        )
        return rate
    finally:
        broker.stop()


def main() -> None:
    """Parse arguments, run both workloads, print the figures."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--alerts", type=int, default=100_000, help="alert records in the backlog")
    p.add_argument("--samples", type=int, default=200_000, help="sample records in the backlog")
    p.add_argument("--series", type=int, default=2_000, help="distinct series among the samples")
    p.add_argument("--distinct", type=int, default=5_000, help="alerts in the repeating stream")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=5000, help="records per getmany()")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--profile", help="run the daemon under cProfile, writing FILE.alerts/.samples")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="wk-kafka-bench-") as tmp:
        work = Path(tmp)
        distinct = run("alerts-distinct", "alert", alert_records(args.alerts), args, work)
        repeating = run(
            "alerts-repeating", "alert", alert_records(args.alerts, args.distinct), args, work
        )
        samples = run("samples", "samples", sample_records(args.samples, args.series), args, work)
    print(
        f"RESULT alert messages/s: distinct {distinct:,.0f}, repeating {repeating:,.0f} "
        f"(target >= 20,000); sample messages/s through rules: {samples:,.0f}"
    )


if __name__ == "__main__":
    main()
