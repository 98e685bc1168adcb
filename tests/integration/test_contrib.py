"""The daemon's own /metrics passes `promtool check metrics`, and what systemd/contrib ships
(alerting rules, Grafana dashboard) is tested by promtool and uses only metrics that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import realstack
import yaml
from realstack import REPO, Unavailable

CONTRIB = REPO / "systemd" / "contrib"
_NAME = re.compile(r"\b((?:watchkeeper|process|python)_[a-z0-9_]+)")


def _promtool() -> str:
    try:
        return realstack.require("/usr/bin/promtool")
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("metrics")
    wk = realstack.Watchkeeper(tmp / "wk", f"sqlite:///{tmp}/wk/events.db")
    try:
        wk.start()
        alert = [{"labels": {"alertname": "MetricsTest", "instance": "web1"}}]
        assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        [inc] = realstack.wait_for(lambda: wk.incidents() or None, timeout=30, what="incident")
        assert httpx.get(f"{wk.url}/api/v1/incidents/{inc['id']}", timeout=10).status_code == 200
        assert httpx.get(f"{wk.url}/nowhere", timeout=10).status_code == 404
        return httpx.get(f"{wk.url}/metrics", timeout=10).text
    finally:
        wk.stop()


def _families(exposition: str) -> set[str]:
    """Every series name a scrape of this exposition yields (with _total, _bucket...)."""
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind == "counter":
            base = name.removesuffix("_total")
            names |= {base + "_total", base + "_created"}
        elif kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
    return names


def test_live_metrics_pass_promtool(live_metrics: str) -> None:
    done = subprocess.run([_promtool(), "check", "metrics"], input=live_metrics,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == "", done.stdout + done.stderr
    for line in live_metrics.splitlines():
        m = re.match(r"^# TYPE (\S+) counter$", line)
        if m:
            assert m.group(1).endswith("_total"), f"a counter without _total: {m.group(1)}"
    assert re.search(r'^watchkeeper_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$',
                     live_metrics, re.M)
    assert "process_resident_memory_bytes " in live_metrics
    assert "process_cpu_seconds_total " in live_metrics
    assert re.search(
        r'^watchkeeper_http_request_duration_seconds_count\{code="200",method="GET",'
        r'route="/api/v1/incidents/\{[a-z_]+\}"\} 1\.0$', live_metrics, re.M
    ), "the histogram labels the route template, not the path with its id"
    assert re.search(r'_count\{code="200",method="POST",route="/api/v2/alerts"\} 1\.0$',
                     live_metrics, re.M)
    assert re.search(r'_count\{code="404",method="GET",route="\(unmatched\)"\} 1\.0$',
                     live_metrics, re.M)
    assert 'watchkeeper_events_recorded_total{type="IncidentOpened"} 1.0' in live_metrics


def test_rules_pass_promtool_tests() -> None:
    rules = CONTRIB / "prometheus"
    for argv in (["check", "rules", "watchkeeper.rules.yml"],
                 ["test", "rules", "watchkeeper.rules.test.yml"]):
        done = subprocess.run([_promtool(), *argv], cwd=rules, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_use_only_metrics_that_exist(live_metrics: str) -> None:
    exists = _families(live_metrics)
    rules = yaml.safe_load((CONTRIB / "prometheus" / "watchkeeper.rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((CONTRIB / "grafana" / "watchkeeper.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in _NAME.findall(e)}
    assert len(used) >= 15, used
    missing = sorted(used - exists)
    assert not missing, f"used but not exposed by the daemon: {missing}"
    # Every alert the issue asked for is there.
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"WatchkeeperWriterStalled", "WatchkeeperSourceDisconnected",
            "WatchkeeperDeadLettersRising", "WatchkeeperApprovalBacklog",
            "WatchkeeperInvestigationsEscalated", "WatchkeeperNotificationsFailing"} <= names


def test_families_expands_suffixes() -> None:
    text = "# TYPE a counter\n# TYPE b histogram\n# TYPE c gauge\n"
    assert {"a_total", "b_bucket", "b_count", "c"} <= _families(text)
    assert "c_total" not in _families(text)
    assert Path(CONTRIB).is_dir()
