"""End to end with the real thing: Prometheus evaluates a rule over a metric the test controls,
and the alert reaches a watchkeeper process (a) through Alertmanager's webhook and (b) from
Prometheus directly, as an Alertmanager. The incident opens; the condition clears; it resolves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from prometheus_client.parser import text_string_to_metric_families
from realstack import Exporter, Watchkeeper, wait_for

pytestmark = pytest.mark.integration

ALERT = "WatchkeeperE2E"
METRIC = "wk_e2e_condition"
DEADLINE = 45.0  # generous: two cores shared with other test runs


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    """A metric the rule watches; the test flips it to clear the condition."""
    exp = Exporter(METRIC, 1.0)
    try:
        yield exp
    finally:
        exp.close()


@pytest.fixture
def watchkeeper(tmp_path: Path) -> Iterator[Watchkeeper]:
    """A watchkeeper process with its own SQLite store."""
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path / 'wk' / 'events.db'}",
        {"grouping": {"group_by": ["alertname"]}},
    )
    wk.start()
    try:
        yield wk
    finally:
        wk.stop()


def _prometheus_config(exporter: Exporter, alertmanager: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "e2e", "static_configs": [{"targets": [exporter.address]}]}
        ],
        "alerting": {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "timeout": "5s",
                    "static_configs": [{"targets": [alertmanager]}],
                }
            ]
        },
    }


RULES = {
    "groups": [
        {
            "name": "e2e",
            "interval": "1s",
            "rules": [
                {
                    "alert": ALERT,
                    "expr": f"{METRIC} > 0",
                    "for": "0s",
                    "labels": {"severity": "critical", "team": "sre"},
                    "annotations": {"summary": "the e2e condition holds on {{ $labels.instance }}"},
                }
            ],
        }
    ]
}


def _start_or_skip(start: Any, *args: Any) -> Any:
    try:
        return start(*args)
    except realstack.Unavailable as e:
        pytest.skip(str(e))


def _incident(wk: Watchkeeper, state: str) -> dict[str, Any] | None:
    for inc in wk.incidents(state):
        if inc["group_labels"].get("alertname") == ALERT:
            detail: dict[str, Any] = wk.get(f"/api/v1/incidents/{inc['id']}")
            return detail
    return None


def _received(wk: Watchkeeper) -> float:
    """watchkeeper_alerts_received_total{source="api_v2"} from /metrics."""
    text = httpx.get(f"{wk.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "watchkeeper_alerts_received_total" and sample.labels == {
                "source": "api_v2"
            }:
                return sample.value
    return 0.0


def _see_it_open_then_resolve(wk: Watchkeeper, exporter: Exporter, source: str) -> None:
    opened = wait_for(
        lambda: _incident(wk, "open"), timeout=DEADLINE, what=f"{ALERT} incident to open"
    )
    assert opened["severity"] == "critical"
    (alert,) = opened["alerts"]
    assert alert["status"] == "firing"
    assert alert["source"] == source
    assert alert["labels"]["alertname"] == ALERT
    assert alert["labels"]["team"] == "sre"
    assert alert["labels"]["instance"] == exporter.address
    assert "e2e condition holds" in alert["annotations"]["summary"]
    assert alert["generator_url"]  # Prometheus links back to the rule's expression

    exporter.value = 0.0  # the condition clears
    resolved = wait_for(
        lambda: _incident(wk, "resolved"), timeout=DEADLINE, what=f"{ALERT} incident to resolve"
    )
    assert resolved["id"] == opened["id"]
    assert [a["status"] for a in resolved["alerts"]] == ["resolved"]
    kinds = [e["type"] for e in resolved["timeline"]]
    assert kinds[:2] == ["IncidentOpened", "AlertFired"]
    assert kinds[-2:] == ["AlertResolved", "IncidentResolved"]
    # Exactly one incident for the group, from start to end.
    assert (
        len(
            [
                i
                for i in wk.incidents("open", "acknowledged", "resolved")
                if i["group_labels"].get("alertname") == ALERT
            ]
        )
        == 1
    )


def test_prometheus_alertmanager_webhook_to_watchkeeper(
    tmp_path: Path, exporter: Exporter, watchkeeper: Watchkeeper
) -> None:
    am_config = {
        "route": {
            "receiver": "watchkeeper",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "watchkeeper",
                "webhook_configs": [
                    {
                        "url": f"{watchkeeper.url}/api/v1/webhook/alertmanager",
                        "send_resolved": True,
                    }
                ],
            }
        ],
    }
    am = _start_or_skip(realstack.start_alertmanager, tmp_path / "am", am_config)
    try:
        prom = _start_or_skip(
            realstack.start_prometheus,
            tmp_path / "prom",
            _prometheus_config(exporter, f"{realstack.LOOPBACK}:{am.port}"),
            RULES,
        )
        try:
            _see_it_open_then_resolve(watchkeeper, exporter, "alertmanager")
            # Resolution came from Alertmanager's resolved notification, not from a lease:
            # webhook alerts carry none.
            inc = _incident(watchkeeper, "resolved")
            assert inc is not None
            resolved = [e for e in inc["timeline"] if e["type"] == "AlertResolved"]
            assert resolved[0]["data"]["reason"] == "resolved by source"
        finally:
            prom.child.stop()
    finally:
        am.child.stop()


def test_prometheus_posts_to_watchkeeper_directly(
    tmp_path: Path, exporter: Exporter, watchkeeper: Watchkeeper
) -> None:
    prom = _start_or_skip(
        realstack.start_prometheus,
        tmp_path / "prom",
        _prometheus_config(exporter, f"{realstack.LOOPBACK}:{watchkeeper.port}"),
        RULES,
    )
    try:
        _see_it_open_then_resolve(watchkeeper, exporter, "api_v2")
        # Prometheus keeps re-sending the resolved alert (every resend delay); those
        # repeats are accepted and change nothing.
        position = watchkeeper.get("/api/v1/status")["position"]
        received = _received(watchkeeper)
        wait_for(
            lambda: _received(watchkeeper) >= received + 3 or None,
            timeout=DEADLINE,
            what="Prometheus to re-send the resolved alert",
        )
        assert realstack.intake_events_after(watchkeeper, position) == []
    finally:
        prom.child.stop()
