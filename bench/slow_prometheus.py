"""A slow Prometheus must not starve the API: GET /api/v1/incidents/{id} latency while eight
investigations wait on a Prometheus that answers after 5 s.

Starts a stand-in Prometheus whose every query takes `DELAY` seconds, the daemon (as a
process, agent concurrency 8, the shipped generic-triage runbook, whose diagnostics query
Prometheus), posts 8 alerts so 8 investigations block on their queries, then times 30 reads
of one incident.

    .venv/bin/python bench/slow_prometheus.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from realstack import free_port, wait_for

DELAY = 5.0


class SlowPrometheus(BaseHTTPRequestHandler):
    waiting = 0  # queries being held right now

    def _answer(self) -> None:
        SlowPrometheus.waiting += 1
        time.sleep(DELAY)
        SlowPrometheus.waiting -= 1
        body = json.dumps({"status": "success",
                           "data": {"resultType": "vector", "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer  # noqa: N815 - http.server's names
    do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    prom = ThreadingHTTPServer(("127.0.0.1", 0), SlowPrometheus)
    threading.Thread(target=prom.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="wk-slowprom-"))
    port = free_port()
    config = tmp / "wk.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp),
        "http": {"listen": f"127.0.0.1:{port}"},
        "logging": {"level": "warning"},
        "grouping": {"group_by": ["alertname", "instance"]},
        "agent": {"concurrency": 8, "tools": {
            "prometheus_url": f"http://127.0.0.1:{prom.server_port}",
            "prometheus_timeout": "30s"}},
    }))
    exe = Path(sys.executable).with_name("watchkeeper")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    proc = subprocess.Popen([str(exe), "run", "--config", str(config)], env=env,
                            stdout=(tmp / "log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
                 timeout=60, what="daemon ready")
        alerts = [{"labels": {"alertname": "SlowBench", "instance": f"web{i}"}}
                  for i in range(8)]
        assert httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200
        # 6, not 8: before queries had their own pool, the default executor's 6 threads
        # (2 cores + 4) were all Prometheus let in, and reads queued behind them.
        wait_for(lambda: SlowPrometheus.waiting >= 6, timeout=30,
                 what="investigations waiting on Prometheus", interval=0.01)
        time.sleep(0.5)  # the rest arrive, where they can
        times = []
        with httpx.Client(timeout=60) as api:
            inc = api.get(f"{url}/api/v1/incidents").json()["incidents"][0]["id"]
            held_from = time.monotonic()
            # Reads while all eight queries are held (they answer DELAY s after they came).
            while time.monotonic() - held_from < DELAY - 2 and SlowPrometheus.waiting >= 6:
                t0 = time.perf_counter()
                r = api.get(f"{url}/api/v1/incidents/{inc}")
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200
            held = SlowPrometheus.waiting
            if not times:
                raise SystemExit("no read finished while the queries were held")
        print(f"Prometheus answers after {DELAY:.0f} s; {held} queries held at the last read")
        print(f"GET /api/v1/incidents/{{id}} x{len(times)} while they wait: first "
              f"{times[0]:.1f} ms, median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms")
    finally:
        proc.terminate()
        proc.wait(30)
        prom.shutdown()


if __name__ == "__main__":
    main()
