"""The ingest pipeline in one process, stage by stage: where an alert's microseconds go.

`bench/kafka_ingest.py` measures the whole path through a broker and a daemon process; this
one takes the same records and runs the daemon's own code without the broker, so a change
to the hot path can be measured in seconds, and each stage is timed on its own:

- decode: record bytes -> commands (`daemon.payloads.decode`, as the Kafka source does);
- decide: commands -> events folded into a fresh world (`daemon.domain.decide`);
- map: events -> stored JSON (the writer thread's mapper);
- pipeline: decode + `Ingestor.submit` with a Kafka `Tracking` per partition batch, SQLite
  store in a temp dir, the daemon's reactions following the log, checkpoints as configured.

Run: `.venv/bin/python bench/pipeline.py [--alerts N] [--partitions P] [--batch B]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eventsourcing.persistence import JSONTranscoder, Tracking  # noqa: E402

from bench.kafka_ingest import alert_records  # noqa: E402
from daemon.config.settings import Settings  # noqa: E402
from daemon.domain import World, decide  # noqa: E402
from daemon.engine.reactor import Reactor  # noqa: E402
from daemon.engine.store import EventLog, PydanticMapper  # noqa: E402
from daemon.intake.payloads import coalesce, decode  # noqa: E402
from daemon.runtime import memory  # noqa: E402
from daemon.runtime.wiring import build_ingestor, build_reactions  # noqa: E402

# Throughput benchmarks hold every distinct alert: the hot-set limits are lifted here.
UNBOUNDED = {"max_alerts": 10**7, "max_open_incidents": 10**7, "max_alerts_per_incident": 10**7}

LEASE = timedelta(minutes=5)


def now() -> datetime:
    return datetime.now(UTC)


def stages(records: list[bytes], settings: Settings) -> dict[str, float]:
    """Microseconds per record of each stage alone."""
    out: dict[str, float] = {}
    t0 = now()
    t = time.perf_counter()
    commands = []
    for body in records:
        commands += decode("alert", body, now=t0, resolve_timeout=LEASE, source="kafka:bench")
    out["decode"] = (time.perf_counter() - t) / len(records) * 1e6
    world = World(policy=settings.grouping.policy(settings.limits.state_limits()))
    t = time.perf_counter()
    events = []
    for cmd in commands:
        events += decide(world, cmd, t0)
    out["decide"] = (time.perf_counter() - t) / len(records) * 1e6
    mapper = PydanticMapper(transcoder=JSONTranscoder())
    t = time.perf_counter()
    for ev in events:
        mapper.to_stored_event(ev)
    out["map"] = (time.perf_counter() - t) / len(records) * 1e6
    return out


async def pipeline(records: list[bytes], args: argparse.Namespace, work: Path) -> float:
    """Records per second from bytes to committed state through the daemon's Ingestor."""
    settings = Settings.model_validate(
        {
            "store": f"sqlite:///{work / 'events.db'}",
            "grouping": {"group_by": ["alertname"]},
            "limits": UNBOUNDED,
        }
    )
    store = EventLog(settings.store)
    ing = build_ingestor(settings, store, now)
    # The Ingestor's own commit timing (what /metrics observes in the daemon): time from
    # handing a batch to the writer thread to its commit (mapping, insert, commit).
    writing = [0.0]

    def observe(seconds: float) -> None:
        writing[0] += seconds

    ing.write_latency_observer = observe
    await ing.start()
    reactor = Reactor(ing, build_reactions(settings, ing, now))
    await reactor.start()
    parts = [records[p :: args.partitions] for p in range(args.partitions)]

    async def partition(p: int, recs: list[bytes]) -> None:
        for start in range(0, len(recs), args.batch):
            chunk = recs[start : start + args.batch]
            t0 = now()
            commands = []
            for body in chunk:
                commands += decode("alert", body, now=t0, resolve_timeout=LEASE,
                                   source="kafka:bench")
            last = start + len(chunk) - 1
            await ing.submit(coalesce(commands), tracking=Tracking(f"kafka:bench:{p}", last))

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(partition(p, recs) for p, recs in enumerate(parts)))
    elapsed = time.perf_counter() - t
    cpu = time.process_time() - cpu
    print(
        f"  cpu/wall {cpu / elapsed:.2f}, commits (writer thread) {writing[0] / elapsed:.0%} "
        f"of the wall time ({writing[0] / len(records) * 1e6:.1f} µs/record)",
        flush=True,
    )
    await reactor.close()
    await ing.close()
    store.close()
    return len(records) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1666, help="records per partition batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages-only", action="store_true", help="time the stages, skip the pipeline")
    args = ap.parse_args()
    records = alert_records(args.alerts)
    # The collector as the daemon sets it up (daemon/memory.py).
    memory.configure(Settings().tuning.gc_threshold)
    settings = Settings.model_validate(
        {"grouping": {"group_by": ["alertname"]}, "limits": UNBOUNDED}
    )
    gc.collect()
    rows = [stages(records, settings) for _ in range(args.repeats)]
    for name in rows[0]:
        best = min(r[name] for r in rows)
        print(f"{name:>8}: {best:6.1f} µs/record (best of {args.repeats})")
    if args.stages_only:
        return
    rates = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="wk-pipeline-") as d:
            rates.append(asyncio.run(pipeline(records, args, Path(d))))
        print(f"pipeline run {i + 1}: {rates[-1]:,.0f} records/s", flush=True)
    rates.sort()
    print(
        f"pipeline: {rates[len(rates) // 2]:,.0f} records/s median "
        f"({1e6 / rates[len(rates) // 2]:.1f} µs/record) for {args.alerts:,} distinct alerts, "
        f"{args.partitions} partitions x {args.batch} records per batch"
    )


if __name__ == "__main__":
    main()
