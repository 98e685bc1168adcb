"""Prometheus source against a real Prometheus scraping an exporter the test controls.

A PromQL rule fires one alert per result series (after `for:`), each resolves when its
series leaves the result; Prometheus' own alerts are imported from /api/v1/alerts and
resolve when Prometheus drops them. Prometheus going away degrades the source only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import SeriesExporter, wait_until
from realstack import Prometheus, Unavailable, Watchkeeper, start_prometheus

pytestmark = pytest.mark.integration
DEADLINE = 45.0
METRIC = "wk_device_temperature"


@pytest.fixture
def exporter() -> Iterator[SeriesExporter]:
    exp = SeriesExporter(METRIC)
    exp.set(90, device="a")
    exp.set(95, device="b")
    exp.set(10, device="c")
    try:
        yield exp
    finally:
        exp.close()


@pytest.fixture
def prometheus(tmp_path: Path, exporter: SeriesExporter) -> Iterator[Prometheus]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "devices", "static_configs": [{"targets": [exporter.address]}]}
        ],
    }
    rules = {
        "groups": [
            {
                "name": "own",
                "rules": [
                    {
                        "alert": "PromSideHot",
                        "expr": f"{METRIC} > 92",
                        "labels": {"team": "plant"},
                        "annotations": {"summary": "evaluated by Prometheus"},
                    },
                ],
            }
        ]
    }
    try:
        prom = start_prometheus(tmp_path / "prometheus", config, rules)
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield prom
    finally:
        prom.child.stop()


def open_alerts(wk: Watchkeeper, title: str) -> list[dict[str, Any]]:
    found = [i for i in wk.incidents("open") if i["title"] == title]
    if not found:
        return []
    detail = wk.get(f"/api/v1/incidents/{found[0]['id']}")
    return [a for a in detail["alerts"] if a["status"] == "firing"]


def devices(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["device"] for a in alerts}


def test_promql_rules_and_imported_alerts(
    tmp_path: Path, exporter: SeriesExporter, prometheus: Prometheus
) -> None:
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path / 'wk' / 'events.db'}",
        {
            "grouping": {"group_by": ["alertname"]},
            "tuning": {"tick_interval": "200ms"},
            "sources": {
                "reconnect_min": "200ms",
                "reconnect_max": "1s",
                "prometheus": {
                    "url": prometheus.url,
                    "interval": "1s",
                    "timeout": "1s",
                    "import_alerts": True,
                    "rules": [
                        {
                            "alert": "DeviceHot",
                            "expr": f"{METRIC} > 80",
                            "for": "2s",
                            "labels": {"severity": "page"},
                            "annotations": {"summary": "{{ $labels.device }} is at {{ $value }}"},
                        }
                    ],
                },
            },
        },
    )
    wk.start()
    try:
        hot = wait_until(
            lambda: len(a := open_alerts(wk, "DeviceHot")) == 2 and a,
            DEADLINE,
            "DeviceHot for devices a and b",
        )
        assert devices(hot) == {"a", "b"}
        a = next(x for x in hot if x["labels"]["device"] == "a")
        assert a["labels"] == {
            "alertname": "DeviceHot",
            "device": "a",
            "instance": exporter.address,
            "job": "devices",
            "severity": "page",
        }
        assert a["annotations"]["summary"] == "a is at 90"
        types = [e["type"] for e in wk.events()]
        assert types.index("RulePending") < types.index("RuleFiring"), (
            "for: 2s holds it pending first"
        )

        imported = wait_until(
            lambda: open_alerts(wk, "PromSideHot"), DEADLINE, "PromSideHot imported"
        )
        assert devices(imported) == {"b"}
        assert imported[0]["labels"]["team"] == "plant"
        assert imported[0]["ends_at"] is not None, "imported alerts hold a lease"

        # Series a leaves the result: only its alert resolves.
        exporter.remove(device="a")
        wait_until(
            lambda: devices(open_alerts(wk, "DeviceHot")) == {"b"},
            DEADLINE,
            "device a's alert to resolve when its series disappears",
        )
        # b cools down: the rule's incident resolves, and Prometheus' own alert goes too.
        exporter.set(50, device="b")
        wait_until(
            lambda: {"DeviceHot", "PromSideHot"} <= {i["title"] for i in wk.incidents("resolved")},
            DEADLINE,
            "both incidents to resolve",
        )
        src = wk.get("/api/v1/status")["sources"]["prometheus"]
        assert src["connected"] is True
        assert src["messages"] > 0
        assert src["errors"] == 0

        # Prometheus goes away: the source degrades, the daemon carries on.
        prometheus.child.stop()
        src = wait_until(
            lambda: (
                (s := wk.get("/api/v1/status")["sources"]["prometheus"])["connected"] is False and s
            ),
            DEADLINE,
            "the source to report Prometheus gone",
        )
        assert src["errors"] >= 1
        assert src["last_error"]
        assert wk.get("/api/v1/status")["healthy"] is True
    finally:
        wk.stop()
