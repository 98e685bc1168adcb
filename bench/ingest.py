"""Ingest benchmark: watchkeeper against a real Alertmanager, same payloads, same client.

Posts Alertmanager API v2 batches (256 alerts each, as Prometheus sends) with one httpx
client over a few concurrent connections, and prints alerts/s for both and the ratio
watchkeeper/Alertmanager, for two streams:

- repeat-heavy: 1,000 distinct alerts re-sent until 100,000 alerts have been posted;
- all-distinct: 50,000 alerts that are all new.

watchkeeper runs as its own process with a SQLite store in a temp dir and commits every
state change before it answers. Each round starts fresh processes; the table shows medians
over the rounds and the CPU each server spent per alert (read from /proc, all threads),
which is steadier than wall-clock rates on a shared machine.

Run: `.venv/bin/python bench/ingest.py` (or `make bench`). `--profile FILE` runs the daemon
under cProfile (FILE.<round> is written when it exits); `--py-spy FILE` samples it with
py-spy (FILE.<round>, collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import realstack  # noqa: E402  (lives with the tests; shared by tests and benchmarks)

# Throughput benchmarks hold every distinct alert: the hot-set limits are lifted here.
UNBOUNDED = {"max_alerts": 10**7, "max_open_incidents": 10**7, "max_alerts_per_incident": 10**7}


@dataclass
class Stream:
    """One workload: its name, request bodies, and how many alerts they hold."""

    name: str
    bodies: list[bytes]
    alerts: int
    distinct: int


@dataclass
class Result:
    """Throughput of one target on one stream."""

    seconds: float
    alerts: int
    failures: int
    client_cpu: float  # seconds of CPU the benchmark's own client used
    server_cpu: float = 0.0  # seconds of CPU the target process used meanwhile (all threads)

    @property
    def rate(self) -> float:
        """Alerts per second."""
        return self.alerts / self.seconds


def _alert(i: int, prefix: str, starts: str, ends: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": f"{prefix}{i % 40}",
            "cluster": f"c{i % 3}",
            "instance": f"host-{i}.example:9100",
            "job": "node",
            "severity": "critical" if i % 7 == 0 else "warning",
        },
        "annotations": {
            "summary": f"{prefix} condition on host-{i}",
            "runbook_url": "https://runbooks.example/bench",
        },
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": f"http://prometheus.example:9090/graph?g0.expr=up%7Binstance%3D%22host-{i}%22%7D",
    }


def _batches(alerts: list[dict[str, Any]], size: int) -> list[bytes]:
    return [json.dumps(alerts[i : i + size]).encode() for i in range(0, len(alerts), size)]


def build_streams(
    repeat_distinct: int, repeat_total: int, distinct: int, batch: int
) -> list[Stream]:
    """The two workloads, rendered to request bodies once so both targets get the same bytes."""
    now = datetime.now(UTC)
    starts = now.isoformat()
    ends = (now + timedelta(hours=2)).isoformat()
    base = [_alert(i, "BenchRepeat", starts, ends) for i in range(repeat_distinct)]
    repeated = [base[i % repeat_distinct] for i in range(repeat_total)]
    fresh = [_alert(i, "BenchDistinct", starts, ends) for i in range(distinct)]
    return [
        Stream("repeat-heavy", _batches(repeated, batch), repeat_total, repeat_distinct),
        Stream("all-distinct", _batches(fresh, batch), distinct, distinct),
    ]


async def post_all(url: str, bodies: list[bytes], alerts: int, concurrency: int) -> Result:
    """Post every body to `url` from `concurrency` workers sharing one client."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                body = queue.get_nowait()
                r = await client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    failures += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return Result(elapsed, alerts, failures, cpu)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profiled_argv(wk: realstack.Watchkeeper, out: str) -> list[str]:
    """The daemon's command line under cProfile (the profile is written when it exits)."""
    script = Path(sys.executable).with_name("watchkeeper")
    profile = str(Path(out).resolve())
    return [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        profile,
        str(script),
        "run",
        "--config",
        str(wk.config_path),
    ]


def _attach_py_spy(wk: realstack.Watchkeeper, out: str) -> subprocess.Popen[bytes]:
    """Sample the daemon (every thread, native frames off) with py-spy until interrupted."""
    assert wk.child is not None
    assert wk.child.proc is not None
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise realstack.Unavailable("py-spy is not installed (.venv/bin/pip install py-spy)")
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(wk.child.proc.pid),
            "--threads",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            out,
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let py-spy attach before the load starts
    return proc


def _status(wk: realstack.Watchkeeper) -> dict[str, Any]:
    status: dict[str, Any] = wk.get("/api/v1/status")
    return status


@dataclass
class Row:
    """One stream in one round: both targets, and what watchkeeper committed."""

    stream: Stream
    wk: Result
    am: Result
    committed: int
    fired: int


async def one_round(args: argparse.Namespace, round_: int, work: Path) -> list[Row]:
    """Fresh Alertmanager and watchkeeper, both streams posted to each; return the rows."""
    streams = build_streams(args.repeat_distinct, args.repeat_total, args.distinct, args.batch)
    am = realstack.start_alertmanager(
        work / "am",
        {
            "route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "30s"},
            "receivers": [{"name": "null"}],
        },
    )
    wk = realstack.Watchkeeper(
        work / "wk",
        f"sqlite:///{work / 'wk' / 'events.db'}",
        # Throughput, not the hot-set limits: 50,000 distinct alerts must all be held.
        {"grouping": {"group_by": ["alertname", "cluster"]}, "limits": UNBOUNDED},
    )
    if args.profile:
        assert wk.child is not None
        wk.child.argv = _profiled_argv(wk, f"{args.profile}.{round_}")
    spy = None
    rows = []
    try:
        wk.start()
        if args.py_spy:
            spy = _attach_py_spy(wk, f"{args.py_spy}.{round_}")
        # One small batch each first, so connection set-up is not measured.
        now = datetime.now(UTC)
        warm = json.dumps(
            [_alert(0, "BenchWarmup", now.isoformat(), (now + timedelta(hours=1)).isoformat())]
        ).encode()
        await post_all(f"{wk.url}/api/v2/alerts", [warm], 1, 1)
        await post_all(f"{am.url}/api/v2/alerts", [warm], 1, 1)
        for stream in streams:
            if args.only and stream.name != args.only:
                continue
            # Alternate who goes first, so drift in the machine's load falls on both.
            order = ["wk", "am"] if round_ % 2 == 0 else ["am", "wk"]
            results: dict[str, Result] = {}
            before = _status(wk)
            for target in order:
                url = f"{wk.url if target == 'wk' else am.url}/api/v2/alerts"
                child = wk.child if target == "wk" else am.child
                assert child is not None
                assert child.proc is not None
                cpu = _cpu_seconds(child.proc.pid)
                res = await post_all(url, stream.bodies, stream.alerts, args.concurrency)
                res.server_cpu = _cpu_seconds(child.proc.pid) - cpu
                results[target] = res
            after = _status(wk)
            fired = after["event_counts"].get("AlertFired", 0) - before["event_counts"].get(
                "AlertFired", 0
            )
            committed = after["position"] - before["position"]
            rows.append(Row(stream, results["wk"], results["am"], committed, fired))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=120)
        wk.stop(timeout=120)
        am.child.stop()
    return rows


async def run(args: argparse.Namespace) -> int:
    """Every round, then the table."""
    rounds: list[list[Row]] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="wk-bench-") as tmp:
            rounds.append(await one_round(args, r, Path(tmp)))
    _print(rounds, args)
    bad = [
        row
        for rows in rounds
        for row in rows
        if row.wk.failures or row.am.failures or row.fired != row.stream.distinct
    ]
    return 1 if bad else 0


def _print(rounds: list[list[Row]], args: argparse.Namespace) -> None:
    print(
        f"\nbatches of {args.batch} alerts, {args.concurrency} concurrent connections, one httpx "
        f"client; median of {len(rounds)} rounds (fresh processes each), min-max in brackets"
    )
    head = (
        f"{'stream':<14}{'alerts':>9}{'distinct':>10}{'watchkeeper a/s':>26}"
        f"{'alertmanager a/s':>26}{'ratio wk/am':>13}{'CPU us/alert wk/am':>20}"
        f"{'events/round':>14}{'failed':>8}"
    )
    print(head)
    print("-" * len(head))
    for i, first in enumerate(rounds[0]):
        rows = [rs[i] for rs in rounds]
        wk = sorted(r.wk.rate for r in rows)
        am = sorted(r.am.rate for r in rows)
        ratio = statistics.median(r.wk.rate / r.am.rate for r in rows)
        failed = sum(r.wk.failures + r.am.failures for r in rows)
        committed = statistics.median(r.committed for r in rows)
        wk_cpu = statistics.median(r.wk.server_cpu / r.stream.alerts * 1e6 for r in rows)
        am_cpu = statistics.median(r.am.server_cpu / r.stream.alerts * 1e6 for r in rows)

        def cell(xs: list[float]) -> str:
            return f"{statistics.median(xs):,.0f} [{xs[0]:,.0f}-{xs[-1]:,.0f}]"

        print(
            f"{first.stream.name:<14}{first.stream.alerts:>9,}{first.stream.distinct:>10,}"
            f"{cell(wk):>26}{cell(am):>26}{ratio:>13.2f}{f'{wk_cpu:.1f}/{am_cpu:.1f}':>20}"
            f"{committed:>14,.0f}{failed:>8}"
        )
    cpu = [
        f"{r.stream.name} {r.wk.client_cpu / r.wk.seconds:.0%}/{r.am.client_cpu / r.am.seconds:.0%}"
        for r in rounds[-1]
    ]
    print("client CPU share (wk/am), last round: " + ", ".join(cpu))
    for rows in rounds:
        for r in rows:
            if r.fired != r.stream.distinct:
                print(f"!! {r.stream.name}: expected {r.stream.distinct} AlertFired, got {r.fired}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeat-distinct", type=int, default=1_000)
    p.add_argument("--repeat-total", type=int, default=100_000)
    p.add_argument("--distinct", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--only", choices=["repeat-heavy", "all-distinct"])
    p.add_argument("--rounds", type=int, default=3, help="fresh processes each round")
    p.add_argument("--profile", help="run the daemon under cProfile, writing this file")
    p.add_argument(
        "--py-spy", help="sample the daemon with py-spy (raw collapsed stacks) into this file"
    )
    args = p.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the servers started here stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(run(args))
    except realstack.Unavailable as e:
        print(f"cannot run the benchmark: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the servers it started are stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
