"""MQTT source against a real Mosquitto, with mosquitto_pub as the publishing client.

Topic templates map levels to labels; bare numbers and JSON samples go through rules (with
hysteresis and absence); JSON alerts open incidents; the broker restarts in the middle and
the daemon reconnects and subscribes again.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from brokers import Mosquitto, wait_until
from realstack import Starter, Watchkeeper

pytestmark = pytest.mark.integration
DEADLINE = 45.0


@pytest.fixture
def mosquitto(tmp_path: Path, started: Starter) -> Mosquitto:
    return started(lambda: Mosquitto(tmp_path / "mosquitto"))


def incidents(wk: Watchkeeper, state: str) -> dict[str, dict[str, Any]]:
    return {i["title"]: i for i in wk.incidents(state)}


def alert_labels(wk: Watchkeeper, incident: dict[str, Any]) -> list[dict[str, str]]:
    detail = wk.get(f"/api/v1/incidents/{incident['id']}")
    return [a["labels"] for a in detail["alerts"]]


def mqtt(wk: Watchkeeper) -> dict[str, Any]:
    src: dict[str, Any] = wk.get("/api/v1/status")["sources"]["mqtt"]
    return src


def test_templates_rules_alerts_and_a_broker_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    client_id = f"wk-test-{uuid.uuid4().hex[:6]}"
    wk = Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path / 'wk' / 'events.db'}",
        {
            "grouping": {"group_by": ["alertname", "site"]},
            "tuning": {"tick_interval": "200ms"},
            "sources": {
                "reconnect_min": "300ms",
                "reconnect_max": "2s",
                "mqtt": {
                    "url": f"mqtt://127.0.0.1:{mosquitto.port}",
                    "client_id": client_id,
                    "subscriptions": [
                        {
                            "filter": "sites/+/+/+",
                            "template": "sites/{site}/{device}/{metric}",
                            "format": "samples",
                        },
                        {"filter": "alerts/+", "template": "alerts/{site}", "format": "alert"},
                    ],
                },
            },
            "rules": [
                {
                    "alert": "HighTemperature",
                    "metric": "temperature",
                    "condition": "> 80",
                    "clear": 75,
                    "labels": {"severity": "warning"},
                },
                {"alert": "DeviceSilent", "metric": "heartbeat", "absent_for": "1s"},
            ],
        },
    )
    wk.start()
    try:
        wait_until(lambda: mqtt(wk)["connected"], DEADLINE, "the MQTT source to connect")
        # A bare number: metric and labels come from the topic.
        mosquitto.publish("sites/lab1/d1/temperature", "91.5")
        hot = wait_until(
            lambda: incidents(wk, "open").get("HighTemperature"),
            DEADLINE,
            "HighTemperature from a bare-number sample",
        )
        assert alert_labels(wk, hot) == [
            {"alertname": "HighTemperature", "site": "lab1", "device": "d1", "severity": "warning"}
        ]
        # JSON sample between clear (75) and threshold (80): still firing (hysteresis).
        mosquitto.publish(
            "sites/lab1/d1/temperature", json.dumps({"value": 78, "labels": {"unit": "C"}})
        )
        # A JSON alert, with the site from its topic.
        mosquitto.publish("alerts/lab2", json.dumps({"labels": {"alertname": "DoorOpen"}}))
        door = wait_until(lambda: incidents(wk, "open").get("DoorOpen"), DEADLINE, "DoorOpen")
        assert alert_labels(wk, door) == [{"alertname": "DoorOpen", "site": "lab2"}]
        mosquitto.publish("sites/lab1/d1/temperature", "not a number")
        letter = wait_until(
            lambda: wk.get("/api/v1/dead-letters")["dead_letters"],
            DEADLINE,
            "a dead letter for the unreadable payload",
        )
        assert "topic sites/lab1/d1/temperature" in letter[0]["reason"]
        assert "HighTemperature" in incidents(wk, "open"), "78 is above the clear threshold"

        # Absence: a device that reported, then went quiet.
        mosquitto.publish("sites/lab3/pump/heartbeat", "1")
        silent = wait_until(
            lambda: incidents(wk, "open").get("DeviceSilent"),
            DEADLINE,
            "DeviceSilent after the heartbeat stopped",
        )
        assert alert_labels(wk, silent) == [
            {"alertname": "DeviceSilent", "site": "lab3", "device": "pump"}
        ]

        # The broker goes away and comes back on the same port.
        errors_before = mqtt(wk)["errors"]
        mosquitto.stop()
        wait_until(
            lambda: not mqtt(wk)["connected"], DEADLINE, "the source to notice the broker left"
        )
        mosquitto.start()
        wait_until(lambda: mqtt(wk)["connected"], DEADLINE, "the source to reconnect")
        assert mqtt(wk)["errors"] > errors_before
        # Subscriptions were made again: samples flow and clear both alerts.
        mosquitto.publish("sites/lab1/d1/temperature", "70")
        mosquitto.publish("sites/lab3/pump/heartbeat", "1")
        wait_until(
            lambda: {"HighTemperature", "DeviceSilent"} <= set(incidents(wk, "resolved")),
            DEADLINE,
            "both rule incidents to resolve after the reconnect",
        )
        log = mosquitto.log_text()
        assert log.count("New client connected from 127.0.0.1") >= 2
        assert log.count(client_id) >= 2
        assert wk.child is not None
        assert wk.child.running
        assert "mqtt reconnecting in" in wk.log_tail(400)  # logfmt: source=mqtt is a field
    finally:
        wk.stop()


def test_rules_reload_on_sighup(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Rules are recorded again on SIGHUP: a removed rule resolves what it fired."""
    hot = {"alert": "HighTemperature", "metric": "temperature", "condition": "> 80"}
    settings: dict[str, Any] = {
        "tuning": {"tick_interval": "200ms"},
        "sources": {
            "mqtt": {
                "url": f"mqtt://127.0.0.1:{mosquitto.port}",
                "client_id": f"wk-test-{uuid.uuid4().hex[:6]}",
                "subscriptions": [
                    {
                        "filter": "sites/+/+/+",
                        "template": "sites/{site}/{device}/{metric}",
                        "format": "samples",
                    },
                ],
            }
        },
        "rules": [hot],
    }
    wk = Watchkeeper(tmp_path / "wk", f"sqlite:///{tmp_path / 'wk' / 'events.db'}", settings)
    wk.start()
    try:
        wait_until(lambda: mqtt(wk)["connected"], DEADLINE, "the MQTT source to connect")
        mosquitto.publish("sites/lab1/d1/temperature", "95")
        wait_until(lambda: "HighTemperature" in incidents(wk, "open"), DEADLINE, "the rule to fire")
        config = yaml.safe_load(wk.config_path.read_text())
        config["rules"] = [{"alert": "LowTemperature", "metric": "temperature", "condition": "< 0"}]
        wk.config_path.write_text(yaml.safe_dump(config))
        assert wk.child is not None
        assert wk.child.proc is not None
        wk.child.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "HighTemperature" in incidents(wk, "resolved"),
            DEADLINE,
            "the removed rule's incident to resolve",
        )
        types = [e["type"] for e in wk.events()]
        assert types.count("RulesConfigured") == 2
        resolved = [e for e in wk.events() if e["type"] == "RuleResolved"]
        assert resolved[0]["data"]["reason"] == "rule removed from the configuration"
        mosquitto.publish("sites/lab1/d1/temperature", "-3")
        wait_until(
            lambda: "LowTemperature" in incidents(wk, "open"),
            DEADLINE,
            "the new rule to apply without a restart",
        )
    finally:
        wk.stop()
