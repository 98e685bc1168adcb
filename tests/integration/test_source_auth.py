"""Sources that need credentials and TLS, against the real servers configured to demand them.

- MQTT: a private Mosquitto that speaks only TLS (a CA and server certificate made with
  openssl) and admits only a user from its `mosquitto_passwd` file; `mosquitto_pub` is the
  publishing client. The password reaches the daemon as a secret reference (`env:`).
- Kafka: tansu behind a TLS terminator (tansu 0.6 cannot serve TLS itself) and advertising
  it, with kcat producing over TLS; the daemon's aiokafka consumer checks the certificate.
- Prometheus: basic auth through its `--web.config.file`; the daemon sends the
  `Authorization` header from its `headers:` setting (a secret reference too).

Each case also shows the failure an on-call engineer would see: a wrong password or an
unknown CA leaves the daemon up, the source disconnected, and the reason in its status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import (
    Kcat,
    Mosquitto,
    SeriesExporter,
    Tansu,
    TlsFiles,
    TlsTerminator,
    make_tls,
    wait_until,
)
from realstack import Prometheus, Starter, Unavailable, Watchkeeper, free_port, start_prometheus

pytestmark = pytest.mark.integration
DEADLINE = 45.0
USER, PASSWORD = "wk-test", "wk-test-secret"
# bcrypt of PASSWORD (10 rounds), as Prometheus' web config wants it; made once with
# `crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))`.
PASSWORD_BCRYPT = "$2b$10$0kSRcEWulc5P7gfYi.OaMOePu.bwUyFH2Qb/BzamVFR/66NAzxzca"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    try:
        return make_tls(tmp_path / "tls")
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def secure_mosquitto(tmp_path: Path, tls: TlsFiles, started: Starter) -> Mosquitto:
    return started(lambda: Mosquitto(tmp_path / "mosquitto", tls=tls, users={USER: PASSWORD}))


def source(wk: Watchkeeper, name: str) -> dict[str, Any]:
    src: dict[str, Any] = wk.get("/api/v1/status")["sources"][name]
    return src


def open_titles(wk: Watchkeeper) -> set[str]:
    return {i["title"] for i in wk.incidents("open")}


def daemon(workdir: Path, kind: str, config: dict[str, Any]) -> Watchkeeper:
    """A daemon whose only source is `sources.<kind>: config`, retrying quickly."""
    return Watchkeeper(
        workdir,
        f"sqlite:///{workdir / 'events.db'}",
        {
            "grouping": {"group_by": ["alertname"]},
            "sources": {"reconnect_min": "200ms", "reconnect_max": "2s", kind: config},
        },
    )


def refused(wk: Watchkeeper, kind: str, what: str, errors: int = 1) -> str:
    """Wait for the source to fail `errors` times; check the daemon only degraded and
    recorded nothing; return the source's last error."""
    src = wait_until(lambda: (s := source(wk, kind))["errors"] >= errors and s, DEADLINE, what)
    assert src["connected"] is False
    assert wk.get("/api/v1/status")["healthy"] is True, "a source problem only degrades"
    assert wk.incidents("open") == []
    assert wk.child is not None
    assert wk.child.running
    error: str = src["last_error"]
    return error


def mqtt_daemon(
    workdir: Path, broker: Mosquitto, *, password: str, tls: dict[str, Any]
) -> Watchkeeper:
    return daemon(
        workdir,
        "mqtt",
        {
            "url": f"mqtts://127.0.0.1:{broker.port}",
            "client_id": workdir.name,
            "username": USER,
            "password": password,
            "tls": tls,
            "subscriptions": [{"filter": "alerts/#", "format": "alert"}],
        },
    )


def test_mqtt_over_tls_with_a_password(
    secure_mosquitto: Mosquitto, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WK_TEST_MQTT_PASSWORD", PASSWORD)
    good = mqtt_daemon(
        tmp_path / "good",
        secure_mosquitto,
        password="env:WK_TEST_MQTT_PASSWORD",
        tls={"ca_file": str(tls.ca)},
    )
    wrong_password = mqtt_daemon(
        tmp_path / "wrong-password",
        secure_mosquitto,
        password="not-the-password",
        tls={"ca_file": str(tls.ca)},
    )
    # No ca_file: the system's CAs, which never signed the test certificate.
    unknown_ca = mqtt_daemon(
        tmp_path / "unknown-ca", secure_mosquitto, password=PASSWORD, tls={}
    )
    daemons = [good, wrong_password, unknown_ca]
    try:
        for wk in daemons:
            wk.start()
        wait_until(lambda: source(good, "mqtt")["connected"], DEADLINE, "the TLS connection")
        secure_mosquitto.publish("alerts/lab", json.dumps({"labels": {"alertname": "OverTls"}}))
        wait_until(
            lambda: "OverTls" in open_titles(good), DEADLINE, "the alert published over TLS"
        )
        error = refused(
            wrong_password, "mqtt", "the wrong password to be refused (and retried)", errors=2
        )
        assert "not authorized" in error.lower(), error
        error = refused(unknown_ca, "mqtt", "the unknown CA to be refused")
        assert "certificate verify failed" in error, error
        # The broker saw the refused login, in its own words.
        log = secure_mosquitto.log_text()
        assert "not authorised" in log or "not authorized" in log.lower(), log[-2000:]
    finally:
        for wk in daemons:
            wk.stop()


def kafka_daemon(workdir: Path, bootstrap: str, topic: str, tls: dict[str, Any]) -> Watchkeeper:
    return daemon(
        workdir,
        "kafka",
        {
            "bootstrap_servers": [bootstrap],
            "group_id": None,
            "security_protocol": "SSL",
            "tls": tls,
            "topics": [{"topic": topic, "format": "alert"}],
        },
    )


def test_kafka_over_tls(tls: TlsFiles, tmp_path: Path, started: Starter) -> None:
    tls_port = free_port()
    broker = started(lambda: Tansu(tmp_path / "tansu", advertised_port=tls_port))
    started(lambda: TlsTerminator(tls, backend=broker.port, port=tls_port))
    topic = "secure-alerts"
    broker.create_topic(topic, 1)
    bootstrap = f"127.0.0.1:{tls_port}"
    try:
        producer = Kcat(
            bootstrap,
            tmp_path / "kcat",
            options={"security.protocol": "ssl", "ssl.ca.location": str(tls.ca)},
        )
    except Unavailable as e:
        pytest.skip(str(e))
    good = kafka_daemon(tmp_path / "good", bootstrap, topic, {"ca_file": str(tls.ca)})
    untrusted = kafka_daemon(tmp_path / "untrusted", bootstrap, topic, {})
    daemons = [good, untrusted]
    try:
        for wk in daemons:
            wk.start()
        producer.produce(topic, [json.dumps({"labels": {"alertname": "KafkaOverTls"}}).encode()])
        wait_until(
            lambda: "KafkaOverTls" in open_titles(good),
            DEADLINE,
            "the alert produced and consumed over TLS",
        )
        assert source(good, "kafka")["connected"] is True
        error = refused(untrusted, "kafka", "the untrusted certificate to be refused")
        assert "CERTIFICATE_VERIFY_FAILED" in error, error
    finally:
        for wk in daemons:
            wk.stop()


METRIC = "wk_auth_temperature"


@pytest.fixture
def guarded_prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus behind basic auth, scraping one hot series."""
    exporter = SeriesExporter(METRIC)
    try:
        exporter.set(90, device="a")
        config = {
            "global": {
                "scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"
            },
            "scrape_configs": [
                {"job_name": "devices", "static_configs": [{"targets": [exporter.address]}]}
            ],
        }
        try:
            prom = start_prometheus(
                tmp_path / "prometheus",
                config,
                web_config={"basic_auth_users": {USER: PASSWORD_BCRYPT}},
                auth=(USER, PASSWORD),
            )
        except Unavailable as e:
            pytest.skip(str(e))
        yield prom
        prom.child.stop()
    finally:
        exporter.close()


def prometheus_daemon(workdir: Path, prom: Prometheus, headers: dict[str, str]) -> Watchkeeper:
    return daemon(
        workdir,
        "prometheus",
        {
            "url": prom.url,
            "interval": "1s",
            "timeout": "1s",
            "headers": headers,
            "rules": [{"alert": "GuardedHot", "expr": f"{METRIC} > 80"}],
        },
    )


def test_prometheus_behind_basic_auth(
    guarded_prometheus: Prometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = guarded_prometheus
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    monkeypatch.setenv("WK_TEST_PROM_AUTH", f"Basic {token}")
    authorized = prometheus_daemon(
        tmp_path / "authorized", prom, {"Authorization": "env:WK_TEST_PROM_AUTH"}
    )
    anonymous = prometheus_daemon(tmp_path / "anonymous", prom, {})
    daemons = [authorized, anonymous]
    try:
        for wk in daemons:
            wk.start()
        wait_until(
            lambda: "GuardedHot" in open_titles(authorized),
            DEADLINE,
            "the PromQL rule evaluated with the Authorization header",
        )
        assert source(authorized, "prometheus")["connected"] is True
        error = refused(anonymous, "prometheus", "Prometheus to refuse a request without auth")
        assert "401" in error, error
        assert "check the Authorization header" in error
        # The secret is not shown back by the daemon.
        status = json.dumps(authorized.get("/api/v1/status"))
        assert token not in status
        assert token not in authorized.log_tail(400)
    finally:
        for wk in daemons:
            wk.stop()
