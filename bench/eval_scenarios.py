"""Write the shipped eval scenarios (daemon/agent/scenarios/<runbook>/<name>/) reproducibly.

Each scenario gets scenario.yaml and history.om: the metric history as OpenMetrics text,
one sample a minute for the hours before the incident. Scenarios sit days apart, so their
histories can share one replay Prometheus. Run: .venv/bin/python bench/eval_scenarios.py
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[1] / "daemon" / "agent" / "scenarios"
BASE = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STEP = 60  # seconds between samples
F = Callable[[float], float]  # minutes before the incident -> value


def const(v: float) -> F:
    return lambda m: v


def ramp(old: float, new: float, over: float = 360) -> F:
    """Linear from `old` (`over` minutes ago) to `new` (now)."""
    return lambda m: new + (old - new) * min(m, over) / over


def step(before: float, after: float, at: float) -> F:
    """`before` until `at` minutes ago, `after` since."""
    return lambda m: after if m <= at else before


def wobble(v: float, amp: float) -> F:
    return lambda m: v + amp * math.sin(m / 7.0)


class Series:
    def __init__(self, name: str, labels: dict[str, str], f: F, counter: bool = False) -> None:
        self.name, self.labels, self.f, self.counter = name, labels, f, counter


def gauge(metric: str, f: F, /, **labels: str) -> Series:
    return Series(metric, labels, f)


def counter(metric: str, rate: F, /, **labels: str) -> Series:
    """A counter whose per-second rate follows `rate`."""
    return Series(metric, labels, rate, counter=True)


def openmetrics(series: list[Series], at: datetime, hours: float) -> str:
    end = int(at.timestamp())
    n = int(hours * 3600 / STEP)
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    out = []
    for name, group in by_name.items():
        out.append(f"# TYPE {name} gauge")
        for s in group:
            lab = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            total = 1000.0
            for i in range(n, -1, -1):
                minutes = i * STEP / 60
                if s.counter:
                    total += max(0.0, s.f(minutes)) * STEP
                    v = total
                else:
                    v = s.f(minutes)
                if math.isnan(v):
                    continue
                out.append(f"{name}{{{lab}}} {v:.10g} {end - i * STEP}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


SCENARIOS: list[dict[str, Any]] = []


SIX_HOURS = {"disk-filling", "memory-pressure"}  # their runbooks read a 6h trend


def scenario(runbook: str, name: str, kind: str, *, labels: dict[str, str],
             series: list[Series], description: str, action: str | None = None,
             params: dict[str, Any] | None = None, cause: list[str] | None = None,
             annotations: dict[str, str] | None = None, shell: dict[str, str] | None = None,
             probes: dict[str, Any] | None = None, hours: float = 2, since: str = "10m",
             runbook_miss: str = "") -> None:
    if runbook in SIX_HOURS:
        hours = 6
    SCENARIOS.append({
        "runbook": runbook, "name": name, "kind": kind, "labels": labels, "series": series,
        "description": description, "action": action, "params": params or {}, "cause": cause or [],
        "annotations": annotations or {}, "shell": shell or {}, "probes": probes or {}, "hours": hours,
        "since": since, "runbook_miss": runbook_miss})


# --- disk-filling --------------------------------------------------------------------------

GB = 1e9


def disk(inst: str, mount: str, free: F, inodes: float = 0.6, ro: float = 0,
         size: float = 50 * GB) -> list[Series]:
    lab = {"instance": inst, "mountpoint": mount, "fstype": "ext4", "device": "/dev/sda2"}
    return [
        gauge("node_filesystem_avail_bytes", lambda m: free(m) * size, **lab),
        gauge("node_filesystem_size_bytes", const(size), **lab),
        gauge("node_filesystem_files", const(3.2e6), **lab),
        gauge("node_filesystem_files_free", const(3.2e6 * inodes), **lab),
        gauge("node_filesystem_readonly", const(ro), **lab),
    ]


DISK = {"alertname": "DiskFull", "instance": "web1:9100", "mountpoint": "/var",
        "severity": "critical"}
scenario("disk-filling", "journal-fills-var", "fault", labels=DISK,
         series=disk("web1:9100", "/var", ramp(0.22, 0.06)),
         description="/var fills steadily from the systemd journal; vacuuming it is the fix.",
         action="vacuum_journal", params={"max_size": "500M"}, cause=["journal"],
         shell={"journal_disk_usage": "Archived and active journals take up 38.2G in the file system."})
scenario("disk-filling", "inodes-exhausted", "red_herring", labels=DISK,
         series=disk("web1:9100", "/var", const(0.41), inodes=0.0008),
         description="The disk alert fires on inodes, not bytes: millions of small cache files. "
                     "Freeing bytes changes nothing; a person must find the directory.",
         cause=["inode"],
         shell={"journal_disk_usage": "Archived and active journals take up 96.0M in the file system."})
scenario("disk-filling", "read-only-remount", "red_herring", labels=DISK,
         series=disk("web1:9100", "/var", const(0.05), ro=1),
         description="ext4 remounted /var read-only after I/O errors; nothing can be written, "
                     "the disk needs a person (fsck, replacement).",
         cause=["read-only"],
         shell={"journal_disk_usage": "Archived and active journals take up 4.1G in the file system."})
scenario("disk-filling", "data-volume-no-journal", "red_herring",
         labels={**DISK, "mountpoint": "/srv/data"},
         series=disk("web1:9100", "/srv/data", ramp(0.2, 0.07), size=2000 * GB),
         description="A data volume fills with application data; the journal is not on it, so "
                     "vacuuming it frees nothing here.",
         cause=["data"])
scenario("disk-filling", "already-cleaned", "control", labels=DISK,
         series=disk("web1:9100", "/var", step(0.05, 0.43, 40)),
         description="Someone cleaned /var 40 minutes ago; the alert is stale.")

# --- systemd-service-down ------------------------------------------------------------------


def unit(inst: str, name: str, failed: F, active: F, restarts: F, others_failed: int = 0
         ) -> list[Series]:
    out = [
        gauge("node_systemd_unit_state", failed, instance=inst, name=name, state="failed"),
        gauge("node_systemd_unit_state", active, instance=inst, name=name, state="active"),
        counter("node_systemd_service_restart_total", restarts, instance=inst, name=name),
    ]
    for i in range(others_failed):
        out.append(gauge("node_systemd_unit_state", const(1), instance=inst,
                         name=f"dep{i}.service", state="failed"))
    return out


SVC = {"alertname": "SystemdUnitFailed", "instance": "app1:9100", "name": "nginx.service",
       "severity": "critical"}
STATUS = ("x nginx.service - A high performance web server\n     Active: failed (Result: "
          "{result}) since Mon 2026-03-02 11:52:10 UTC")
scenario("systemd-service-down", "crashed-once", "fault", labels=SVC,
         series=unit("app1:9100", "nginx.service", step(0, 1, 8), step(1, 0, 8), const(0)),
         description="nginx died once on a SIGSEGV in a module; a restart brings it back.",
         action="restart_unit", params={"unit": "nginx.service"}, cause=["failed"],
         shell={"systemctl_status": STATUS.format(result="signal"),
                "journal_unit": "nginx.service: Main process exited, code=killed, status=11/SEGV"})
scenario("systemd-service-down", "restart-loop-bad-config", "red_herring", labels=SVC,
         series=unit("app1:9100", "nginx.service", step(0, 1, 5), step(1, 0, 5),
                     step(0, 12 / 3600, 60)),
         description="A deploy left a config nginx refuses; systemd restarted it 12 times in an "
                     "hour. Another restart fails again: a person must fix the config.",
         cause=["config"],
         runbook_miss="v3's condition does not read the restart count",
         shell={"systemctl_status": STATUS.format(result="exit-code"),
                "journal_unit": 'nginx: [emerg] unknown directive "gzip_staticc" in '
                                "/etc/nginx/conf.d/site.conf:14"})
scenario("systemd-service-down", "many-units-failed", "red_herring", labels=SVC,
         series=unit("app1:9100", "nginx.service", step(0, 1, 6), step(1, 0, 6), const(0),
                     others_failed=6),
         description="Seven units failed at once after /var filled: the host, not nginx.",
         cause=["host"])
scenario("systemd-service-down", "recovered", "control", labels=SVC,
         series=unit("app1:9100", "nginx.service", step(0, 0, 1), const(1), const(0)),
         description="The unit failed and was restarted by its Restart= policy; it runs.")
scenario("systemd-service-down", "flapping-now-active", "control", labels=SVC,
         series=unit("app1:9100", "nginx.service", lambda m: 1.0 if 20 < m < 25 else 0.0,
                     lambda m: 0.0 if 20 < m < 25 else 1.0, step(0, 2 / 3600, 30)),
         description="The unit flapped twice 20 minutes ago and has been active since.")

# --- kafka-consumer-lag --------------------------------------------------------------------


def kafka(lag: F, consume: F, produce: F, members: float = 3) -> list[Series]:
    g = {"consumergroup": "orders-cg", "topic": "orders"}
    return [
        *(gauge("kafka_consumergroup_lag", lambda m, p=p: lag(m) / 3, partition=str(p), **g)
          for p in range(3)),
        counter("kafka_consumergroup_current_offset", consume, partition="0", **g),
        counter("kafka_topic_partition_current_offset", produce, topic="orders", partition="0"),
        gauge("kafka_consumergroup_members", const(members), consumergroup="orders-cg"),
    ]


LAG = {"alertname": "KafkaConsumerLag", "consumergroup": "orders-cg", "topic": "orders",
       "service": "orders-consumer", "instance": "kafka-exporter:9308", "severity": "critical"}
scenario("kafka-consumer-lag", "stuck-consumer", "fault", labels=LAG,
         series=kafka(ramp(200, 48000, 60), step(80, 0, 40), const(80)),
         description="The consumers stopped committing 40 minutes ago while producers kept "
                     "writing: a hung poll loop. A restart makes them rejoin.",
         action="restart_consumer", params={"unit": "orders-consumer.service"}, cause=["stuck"])
scenario("kafka-consumer-lag", "stalled-producer", "red_herring", labels=LAG,
         series=kafka(const(5200), const(0), const(0)),
         description="The lag gauge sits at 5200 because the producer stalled mid-batch and "
                     "nothing moves; restarting consumers changes nothing.",
         cause=["producer"])
scenario("kafka-consumer-lag", "under-capacity", "fault", labels=LAG,
         series=kafka(ramp(1000, 90000, 360), const(60), const(100)),
         description="Traffic doubled; consumers work at full speed but cannot keep up. More "
                     "replicas, not a restart.",
         action="scale_consumers", cause=["capacity"],
         runbook_miss="the default action is a restart; scaling needs judgement")
scenario("kafka-consumer-lag", "caught-up", "control", labels=LAG,
         series=kafka(step(30000, 120, 15), const(150), const(80)),
         description="A burst was worked off; the lag is back to normal.")

# --- memory-pressure -------------------------------------------------------------------------

MEMTOTAL = 16e9


def memory(avail: F, psi: F, swapfree: float = 0.9, faults: float = 2) -> list[Series]:
    i = {"instance": "db1:9100"}
    return [
        gauge("node_memory_MemAvailable_bytes", lambda m: avail(m) * MEMTOTAL, **i),
        gauge("node_memory_MemTotal_bytes", const(MEMTOTAL), **i),
        gauge("node_memory_SwapFree_bytes", const(swapfree * 4e9), **i),
        gauge("node_memory_SwapTotal_bytes", const(4e9), **i),
        counter("node_pressure_memory_stalled_seconds_total", psi, **i),
        counter("node_vmstat_pgmajfault", const(faults), **i),
        counter("node_vmstat_oom_kill", const(0), **i),
    ]


MEM = {"alertname": "HostOutOfMemory", "instance": "db1:9100", "unit": "reportgen.service",
       "severity": "critical"}
scenario("memory-pressure", "leak-thrashing", "fault", labels=MEM,
         series=memory(ramp(0.4, 0.03), step(0.0, 0.35, 30), swapfree=0.05, faults=900),
         description="reportgen leaks memory for hours; the host now thrashes.",
         action="restart_service", params={"unit": "reportgen.service"}, cause=["thrashing"],
         shell={"top_memory": "PID   RSS     COMMAND\n4121  14.2G   reportgen\n902   310M   postgres"})
scenario("memory-pressure", "cache-no-stall", "red_herring", labels=MEM,
         series=memory(const(0.04), const(0.002)),
         description="Available memory is low but nothing stalls: a large, healthy database "
                     "buffer pool sized on purpose. A restart would only empty its cache.",
         cause=["stall"])
scenario("memory-pressure", "recovered", "control", labels=MEM,
         series=memory(step(0.03, 0.35, 20), step(0.3, 0, 20)),
         description="The nightly batch finished 20 minutes ago; memory is free again.")

# --- mqtt-device-silent --------------------------------------------------------------------


def fleet(at: datetime, silent: set[int], clients: F, up: float = 1, n: int = 20,
          silent_for: float = 3600) -> list[Series]:
    end = at.timestamp()
    out = []
    for d in range(n):
        gone = silent_for if d in silent else 0.0

        def last(m: float, gone: float = gone) -> float:
            t = end - m * 60
            return min(t - 20, end - gone) if gone else t - 20
        out.append(gauge("mqtt_last_message_timestamp_seconds", last, device=f"sensor-{d}"))
    out.append(gauge("broker_clients_connected", clients, instance="broker1:9234"))
    out.append(gauge("up", const(up), job="mosquitto", instance="broker1:9234"))
    return out


MQTT = {"alertname": "MqttDeviceSilent", "device": "sensor-7", "instance": "broker1:9234",
        "severity": "warning"}


def add_mqtt(name: str, kind: str, idx: int, **kw: Any) -> None:
    at = BASE + timedelta(days=4 * idx)
    series = kw.pop("fleet")(at)
    scenario("mqtt-device-silent", name, kind, labels=kw.pop("labels", MQTT), series=series,
             hours=3, **kw)


# Placeholders resolved in main(): these need their own time to build the fleet's series.
MQTT_SPECS = [
    ("broker-down", "fault", {
        "fleet": lambda at: fleet(at, set(range(20)), step(20, 0, 60), up=0),
        "description": "The broker died an hour ago; every device went silent at once.",
        "action": "restart_broker", "cause": ["broker"],
        "shell": {"systemctl_status": "x mosquitto.service - Mosquitto MQTT Broker\n"
                                   "     Active: failed (Result: core-dump)"}}),
    ("one-device-battery", "red_herring", {
        "fleet": lambda at: fleet(at, {7}, const(19), silent_for=7200),
        "description": "One sensor's battery ran flat; the broker and the rest of the fleet are "
                    "fine. A broker restart would disconnect 19 healthy devices.",
        "cause": ["sensor-7"]}),
    ("planned-maintenance", "control", {
        "fleet": lambda at: fleet(at, {7}, const(19), silent_for=1800),
        "annotations": {"description": "sensor-7 unplugged for planned maintenance (CHG-2231)"},
        "description": "The device is off for a planned maintenance window."}),
    ("back-online", "control", {
        "fleet": lambda at: fleet(at, set(), const(20)),
        "description": "The device reported again 20 seconds ago; the alert is stale."}),
]

# --- tls-cert-expiring -----------------------------------------------------------------------

SITE = "https://shop.example.com"
TLS = {"alertname": "SSLCertExpiringSoon", "instance": SITE, "severity": "warning"}


def tls_series(at: datetime, days: float, timer: float, failed: float) -> list[Series]:
    exp = at.timestamp() + days * 86400
    return [
        gauge("probe_ssl_earliest_cert_expiry", const(exp), instance=SITE),
        gauge("probe_ssl_last_chain_expiry_timestamp_seconds", const(exp), instance=SITE),
        gauge("node_systemd_unit_state", const(timer), name="certbot.timer", state="active",
              instance="web1:9100"),
        gauge("node_systemd_unit_state", const(failed), name="certbot.service", state="failed",
              instance="web1:9100"),
    ]


TLS_SPECS = [
    ("renewal-timer-dead", "fault", {
        "make": lambda at: tls_series(at, 9, 0, 0), "probe": 9,
        "description": "certbot.timer was disabled in a migration; nothing renewed.",
        "action": "renew_certificates", "cause": ["renew"],
        "certs": "Certificate Name: shop.example.com\n    Expiry Date: (VALID: 9 days)"}),
    ("renewed-not-reloaded", "red_herring", {
        "make": lambda at: tls_series(at, 9, 1, 0), "probe": 9,
        "description": "certbot renewed last week but nginx was never reloaded: it still serves "
                    "the old certificate. Renewing again changes nothing; a reload does.",
        "action": "reload_web_server", "params": {"unit": "nginx.service"}, "cause": ["reload"],
        "runbook_miss": "the condition reads the served expiry, not what certbot holds",
        "certs": "Certificate Name: shop.example.com\n    Expiry Date: (VALID: 83 days)"}),
    ("already-renewed", "control", {
        "make": lambda at: tls_series(at, 84, 1, 0), "probe": 84,
        "description": "The certificate was renewed and reloaded; the alert was stale.",
        "certs": "Certificate Name: shop.example.com\n    Expiry Date: (VALID: 84 days)"}),
]

# --- http-endpoint-down ----------------------------------------------------------------------

API = "https://api.example.com/health"
HTTP = {"alertname": "EndpointDown", "instance": API, "service": "api", "severity": "critical"}


def http(success: F, status: F, up: F, errors: F) -> list[Series]:
    return [
        gauge("probe_success", success, instance=API),
        gauge("probe_http_status_code", status, instance=API),
        gauge("probe_duration_seconds", const(0.08), instance=API),
        gauge("up", up, job="api", instance="api1:8080"),
        counter("http_requests_total", lambda m: 50 - errors(m), job="api", code="200"),
        counter("http_requests_total", errors, job="api", code="503"),
    ]


scenario("http-endpoint-down", "backend-crashed", "fault", labels=HTTP,
         series=http(step(1, 0, 25), step(200, 0, 25), step(1, 0, 25), const(0)),
         description="The API process hung 25 minutes ago; probes and scrapes both fail.",
         action="restart_backend", params={"unit": "api.service"}, cause=["down"],
         probes={API: {"http_status": 0, "error": "ConnectTimeout: timed out"}})
scenario("http-endpoint-down", "database-down", "red_herring", labels=HTTP,
         series=http(step(1, 0, 20), step(200, 503, 20), const(1), step(0, 48, 20)),
         description="The API runs but answers 503: its database is down. Restarting the API "
                     "does not help.",
         cause=["503"],
         probes={API: {"http_status": 503, "latency_seconds": 0.02}})
scenario("http-endpoint-down", "single-blip", "control", labels=HTTP,
         series=http(lambda m: 0.0 if 8 < m < 10 else 1.0, const(200), const(1), const(0)),
         description="Two failed probes during a deploy; healthy since.",
         probes={API: {"http_status": 200}})

# --- host-high-cpu ---------------------------------------------------------------------------


def cpu(idle: F, iowait: F, steal: F, load: float = 3.9) -> list[Series]:
    i = "batch1:9100"
    out = []
    for c in range(4):
        out.append(counter("node_cpu_seconds_total", idle, instance=i, cpu=str(c), mode="idle"))
        out.append(counter("node_cpu_seconds_total", iowait, instance=i, cpu=str(c),
                           mode="iowait"))
        out.append(counter("node_cpu_seconds_total", steal, instance=i, cpu=str(c),
                           mode="steal"))
    out.append(gauge("node_load5", const(load * 4), instance=i))
    return out


CPU = {"alertname": "HostHighCpuLoad", "instance": "batch1:9100", "unit": "worker.service",
       "severity": "warning"}
TOP = "PID   %CPU COMMAND\n3312  391  worker\n88    2    sshd"
scenario("host-high-cpu", "runaway-worker", "fault", labels=CPU,
         series=cpu(step(0.6, 0.02, 120), const(0.005), const(0)),
         description="worker spins in a loop at 100% CPU for two hours.",
         action="restart_service", params={"unit": "worker.service"}, cause=["cpu"],
         shell={"top_cpu": TOP})
scenario("host-high-cpu", "iowait-disk", "red_herring", labels=CPU,
         series=cpu(step(0.6, 0.03, 120), step(0.01, 0.6, 120), const(0)),
         description="The CPU waits on a failing disk; restarting worker does nothing.",
         cause=["iowait"])
scenario("host-high-cpu", "noisy-neighbour", "red_herring", labels=CPU,
         series=cpu(step(0.6, 0.03, 120), const(0.005), step(0, 0.45, 120)),
         description="The hypervisor steals 45% of the CPU: a noisy neighbour.",
         cause=["steal"])
scenario("host-high-cpu", "batch-finished", "control", labels=CPU,
         series=cpu(step(0.02, 0.7, 12), const(0.005), const(0), load=0.8),
         description="The nightly batch finished 12 minutes ago.")

# --- generic-triage --------------------------------------------------------------------------

ODD = {"alertname": "QueueDepthOdd", "instance": "misc1:9100", "severity": "warning"}
scenario("generic-triage", "target-down", "fault", labels=ODD,
         series=[gauge("up", step(1, 0, 30), instance="misc1:9100", job="node")],
         description="The host stopped answering scrapes; no runbook knows this alert, so a "
                     "person decides.",
         cause=["down"])
scenario("generic-triage", "noisy-rule", "red_herring", labels=ODD,
         series=[gauge("up", const(1), instance="misc1:9100", job="node")],
         description="A rule with a too-tight threshold; the target is healthy. Nothing to do "
                     "but tune the rule.")
scenario("generic-triage", "resolved-quickly", "control", labels=ODD,
         series=[gauge("up", wobble(1, 0), instance="misc1:9100", job="node")],
         description="The alert fired once and everything is healthy.")


def main() -> None:
    for name, kind, kw in MQTT_SPECS:
        idx = len(SCENARIOS)
        add_mqtt(name, kind, idx, **kw)
    for name, kind, kw in TLS_SPECS:
        at = BASE + timedelta(days=4 * len(SCENARIOS))
        days = kw.pop("probe")
        certs = kw.pop("certs")
        scenario("tls-cert-expiring", name, kind, labels=TLS, series=kw.pop("make")(at),
                 probes={SITE: {"http_status": 200, "cert_days_left": days}},
                 shell={"certbot_certificates": certs}, **kw)
    if OUT.exists():
        shutil.rmtree(OUT)
    for idx, sc in enumerate(SCENARIOS):
        at = BASE + timedelta(days=4 * idx)
        d = OUT / sc["runbook"] / sc["name"]
        d.mkdir(parents=True)
        expect: dict[str, Any] = {"kind": sc["kind"], "action": sc["action"]}
        if sc["params"]:
            expect["params"] = sc["params"]
        if sc["cause"]:
            expect["cause"] = sc["cause"]
        if sc["runbook_miss"]:
            expect["runbook_miss"] = sc["runbook_miss"]
        spec = {
            "name": sc["name"],
            "runbook": sc["runbook"],
            "description": sc["description"],
            "time": at.isoformat().replace("+00:00", "Z"),
            "alerts": [{"labels": sc["labels"], "annotations": sc["annotations"],
                        "since": sc["since"]}],
            "expect": expect,
        }
        if sc["shell"]:
            spec["shell"] = sc["shell"]
        if sc["probes"]:
            spec["probes"] = sc["probes"]
        (d / "scenario.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100))
        (d / "history.om").write_text(openmetrics(sc["series"], at, sc["hours"]))
    print(f"wrote {len(SCENARIOS)} scenarios under {OUT}")


if __name__ == "__main__":
    main()
