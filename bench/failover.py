"""Failover: three replicas on one PostgreSQL store, the leader killed again and again.

Starts three `watchkeeper run` processes on a private PostgreSQL (else the machine's
127.0.0.1:5432, in a schema of its own), posts alerts continuously through all three, and
`kill -9`s the leader several times (restarting it as a follower each time), then stops
the last leader with SIGTERM. Reports the takeover times and what must stay zero:
acknowledged alerts lost, groups with two incidents, chat messages sent twice (a local
webhook receiver), escalation deadlines fired twice, actions dispatched twice. A message a
killed leader was sending is recorded as delivery unknown by its successor (at most one per
kill), never sent again.

    .venv/bin/python bench/failover.py            # 5 kills
    .venv/bin/python bench/failover.py 10         # 10 kills
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "support"))

import realstack  # noqa: E402
from chatstubs import ChatStub  # noqa: E402
from replicas import (  # noqa: E402
    SECRET,
    Cluster,
    Intake,
    judge,
    kill,
    replica_settings,
    terminate,
)

KILL_GOAL, TERM_GOAL = 10.0, 2.0


@contextlib.contextmanager
def store() -> Iterator[tuple[str, str]]:
    """A store URL (and what serves it) in a schema of its own."""
    try:
        with realstack.private_postgres() as server, server.schema() as name:
            yield server.url(name), "a private PostgreSQL"
            return
    except realstack.Unavailable as e:
        print(f"no private PostgreSQL ({e}); using the machine's")
    server = realstack.shared_postgres()
    with server.schema() as name:
        yield server.url(name), "the machine's PostgreSQL"


def main() -> int:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    tmp = tempfile.mkdtemp(prefix="wk-failover-")
    with store() as (url, where), ChatStub(webhook_secret=SECRET) as stub:
        ran = Path(tmp) / "ran.txt"
        cluster = Cluster(url, Path(tmp), replica_settings(stub, Path(tmp)))
        began = time.monotonic()
        cluster.start()
        print(f"three replicas on {where}, ready in {time.monotonic() - began:.1f}s")
        # Fewer new groups than the test: storm control would hold pages past 1000 in 5 min.
        intakes = [Intake(wk.url, f"r{i}", burst_every=40) for i, wk in enumerate(cluster.replicas)]
        for intake in intakes:
            intake.start()
        takeovers: list[float] = []
        kills_at: list[float] = []
        try:
            time.sleep(3.0)
            for n in range(kills):
                old = cluster.leader()
                kills_at.append(time.monotonic())
                took = cluster.fail_over(kill)
                takeovers.append(took)
                print(f"kill -9 #{n + 1}: replica r{old} killed; another led after {took:.2f}s")
                time.sleep(1.0)
                assert old is not None
                cluster.replicas[old].start()  # back as a follower
                time.sleep(2.0)
            old = cluster.leader()
            handover = cluster.fail_over(terminate)
            print(f"SIGTERM: replica r{old} stopped; another led after {handover:.2f}s")
            time.sleep(2.0)
        finally:
            for intake in intakes:
                intake.finish()
        time.sleep(8.0)  # escalations (2 s after an opening) and actions are out by now
        survivor = cluster.replicas[cluster.alive()[0]]
        figures = judge(survivor, intakes, stub, ran)
        cluster.stop()
    refused = sum((i.refused for i in intakes), start=type(intakes[0].refused)())
    print()
    print(f"takeover after kill -9 (s): max {max(takeovers):.2f}, "
          f"median {statistics.median(takeovers):.2f} over {len(takeovers)} "
          f"(goal < {KILL_GOAL:g})")
    print(f"takeover after SIGTERM (s): {handover:.2f} (goal < {TERM_GOAL:g})")
    print(f"alerts acknowledged (2xx): {figures.accepted}; refused or unanswered: "
          f"{dict(refused)} (retried by a real sender)")
    print(f"acknowledged alerts lost: {len(figures.lost)}")
    print(f"groups with two incidents: {len(figures.groups_with_two_incidents)}")
    print(f"chat messages: {figures.chat_messages} {figures.chat_by_event}; "
          f"sent twice: {figures.chat_sent_twice} {figures.chat_twice}")
    print(f"escalations sent: {figures.escalations}; deadlines fired twice: "
          f"{figures.escalations_fired_twice}")
    print(f"incidents: {figures.incidents}; actions dispatched: {figures.actions_dispatched}, "
          f"run: {figures.actions_run}; dispatched twice: {figures.actions_dispatched_twice}, "
          f"run twice: {figures.actions_run_twice}")
    print(f"messages of unknown delivery (a killed leader was sending them; not re-sent): "
          f"{sum(figures.chat_unknown.values())} {figures.chat_unknown}")
    problems = figures.problems(kills=len(kills_at))
    if max(takeovers) >= KILL_GOAL or handover >= TERM_GOAL:
        problems.append("a takeover missed its goal")
    if figures.chat_sent_twice:
        t0 = kills_at[0]
        print(f"  kills at (s from the first): {[round(k - t0, 2) for k in kills_at]}")
        print(f"  messages sent twice, arrivals: {[[round(a - t0, 2) for a in at] for at in figures.chat_twice_at]}")
    print("OK" if not problems else "PROBLEMS: " + "; ".join(problems))
    if problems:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
