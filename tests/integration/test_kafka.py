"""Kafka source against a real Kafka-compatible broker (tansu) with kcat as the producer.

Every payload format, a poison message, health in /api/v1/status, /metrics and
`watchkeeper status`, a broker that is down at start, and kill -9 in the middle of
consumption: every message is reflected exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from brokers import Kcat, Tansu, wait_until
from realstack import REPO, Unavailable, Watchkeeper, free_port, wait_for

pytestmark = pytest.mark.integration
# Copies of the captured Prometheus/Alertmanager payloads live with the tests.
SAMPLES = REPO / "tests" / "fixtures" / "samples"
DEADLINE = 60.0  # generous: two cores shared with other test runs


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """One tansu broker (memory storage) for the module; topics are unique per test."""
    try:
        broker = Tansu(tmp_path_factory.mktemp("tansu"))
        broker.start()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kcat(tansu: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Kcat:
    """Debian's kcat pointed at the broker."""
    try:
        return Kcat(tansu.bootstrap, tmp_path_factory.mktemp("kcat"))
    except Unavailable as e:
        pytest.skip(str(e))


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sample_file(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def daemon(workdir: Path, kafka: dict[str, Any], **settings: Any) -> Watchkeeper:
    base: dict[str, Any] = {
        "grouping": {"group_by": ["alertname"]},
        "sources": {"kafka": kafka, "reconnect_min": "200ms", "reconnect_max": "2s"},
        "tuning": {"tick_interval": "200ms"},
    }
    base.update(settings)
    return Watchkeeper(workdir, f"sqlite:///{workdir / 'events.db'}", base)


def status(wk: Watchkeeper) -> dict[str, Any]:
    data: dict[str, Any] = wk.get("/api/v1/status")
    return data


def source(wk: Watchkeeper, name: str = "kafka") -> dict[str, Any]:
    src: dict[str, Any] = status(wk)["sources"][name]
    return src


def titles(wk: Watchkeeper, *states: str) -> set[str]:
    return {i["title"] for i in wk.incidents(*states)}


def test_every_format_a_poison_message_and_resume_after_restart(
    tansu: Tansu, kcat: Kcat, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    topics = {f"{fmt}-{run}": fmt for fmt in ("webhook", "postable", "alert", "samples")}
    for topic in topics:
        tansu.create_topic(topic, 2)
    wk = daemon(
        tmp_path / "wk",
        {
            "bootstrap_servers": tansu.bootstrap,
            "group_id": f"wk-{run}",
            "topics": [{"topic": t, "format": f} for t, f in topics.items()],
        },
        rules=[
            {
                "alert": "HighTemperature",
                "metric": "temperature",
                "condition": "> 80",
                "clear": 75,
                "labels": {"severity": "warning"},
                "annotations": {"summary": "{{ $labels.device }} at {{ $value }}"},
            }
        ],
    )
    postable = sample_file("000_api_v2_alerts.json")
    for a in postable:  # the captured lease ran out long ago; let the daemon give one
        a.pop("endsAt")
        a.pop("startsAt")
        a["labels"]["alertname"] = "PostedOverKafka"
    messages = {
        f"webhook-{run}": [compact(sample_file("002_api_v1_webhook_alertmanager.json"))],
        f"postable-{run}": [compact(postable), compact([{"labels": {"job": "x"}}])],
        f"alert-{run}": [
            compact({"labels": {"alertname": "SingleOverKafka", "severity": "critical"}}),
            compact({"status": "firing", "labels": {"alertname": "WebhookStyleSingle"}}),
            b"{not json",
        ],
        f"samples-{run}": [
            compact({"metric": "temperature", "labels": {"device": "d1"}, "value": 91}),
            compact(
                [
                    {
                        "metric": "temperature",
                        "labels": {"device": "d2"},
                        "value": 50.5,
                        "ts": time.time(),
                    },
                    {"metric": "humidity", "labels": {"device": "d2"}, "value": 99},
                ]
            ),
        ],
    }
    total = sum(len(m) for m in messages.values())
    for topic, batch in messages.items():
        kcat.produce(topic, batch, partition=0)
    wk.start()
    try:
        wait_until(
            lambda: (
                {
                    "HighScrapeDuration",
                    "PostedOverKafka",
                    "SingleOverKafka",
                    "WebhookStyleSingle",
                    "HighTemperature",
                }
                <= titles(wk, "open")
            ),
            DEADLINE,
            "an incident per alert format and one from the temperature rule",
        )
        src = wait_until(
            lambda: (s := source(wk))["messages"] == total and s["lag"] == 0 and s,
            DEADLINE,
            "every record consumed",
        )
        assert src["connected"] is True
        assert src["errors"] == 2, src
        letters = wk.get("/api/v1/dead-letters")["dead_letters"]
        reasons = sorted(d["reason"] for d in letters)
        assert len(letters) == 2
        assert "alertname label is required" in reasons[0] + reasons[1]
        assert any("offset 2: alert: malformed JSON" in r for r in reasons), reasons
        assert {d["source"] for d in letters} == {f"kafka:alert-{run}", f"kafka:postable-{run}"}
        hot = next(i for i in wk.incidents("open") if i["title"] == "HighTemperature")
        detail = wk.get(f"/api/v1/incidents/{hot['id']}")
        (alert,) = detail["alerts"]
        assert alert["labels"] == {
            "alertname": "HighTemperature",
            "device": "d1",
            "severity": "warning",
        }

        metrics = httpx.get(f"{wk.url}/metrics", timeout=10).text
        assert 'watchkeeper_source_connected{kind="kafka",source="kafka"} 1.0' in metrics
        assert (
            f'watchkeeper_source_messages_total{{kind="kafka",source="kafka"}} {float(total)}'
            in metrics
        )
        assert 'watchkeeper_source_lag{kind="kafka",source="kafka"} 0.0' in metrics

        cli = subprocess.run(
            [
                sys.executable,
                "-c",
                "from daemon.cli.main import main; main()",
                "--url",
                wk.url,
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=True,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )
        row = next(line for line in cli.stdout.splitlines() if "│ kafka" in line)
        assert "yes" in row, cli.stdout
        assert f"│ {total} " in row, cli.stdout

        # A restart resumes after the recorded offsets: nothing is applied twice. It joins
        # a new consumer group, which has no committed offsets at all: the position can only
        # come from the event store (and tansu holds a rejoin of the old group for ~18 s).
        before = status(wk)["event_counts"]
        assert wk.stop() == 0
        config = yaml.safe_load(wk.config_path.read_text())
        config["sources"]["kafka"]["group_id"] = f"wk-{run}-again"
        wk.config_path.write_text(yaml.safe_dump(config))
        wk.start()
        wait_until(
            lambda: source(wk)["connected"] and source(wk)["lag"] == 0,
            DEADLINE,
            "the source to reconnect after the restart",
        )
        assert status(wk)["event_counts"] == before
        assert source(wk)["messages"] == 0, "no record was consumed again"
        # Rule state came back from events: a cool sample resolves the alert.
        kcat.produce(
            f"samples-{run}",
            [compact({"metric": "temperature", "labels": {"device": "d1"}, "value": 70})],
            partition=1,
        )
        wait_until(
            lambda: "HighTemperature" in titles(wk, "resolved"),
            DEADLINE,
            "the temperature incident to resolve after the restart",
        )
    finally:
        wk.stop()


def test_broker_down_at_start_degrades_then_recovers_and_loss_is_noticed(
    tmp_path: Path, kcat: Kcat
) -> None:
    port = free_port()
    topic = f"late-{uuid.uuid4().hex[:6]}"
    wk = daemon(
        tmp_path / "wk",
        {
            "bootstrap_servers": f"127.0.0.1:{port}",
            "group_id": None,
            "topics": [{"topic": topic, "format": "alert"}],
        },
    )
    wk.start()
    broker: Tansu | None = None
    try:
        health = wait_until(
            lambda: (
                (r := httpx.get(f"{wk.url}/healthz", timeout=5)).status_code == 200
                and r.json()["sources"]["kafka"]["errors"] >= 2
                and r.json()
            ),
            DEADLINE,
            "/healthz to report the unreachable broker",
        )
        assert health["healthy"] is True, "a missing broker degrades, it does not fail the daemon"
        assert health["sources"]["kafka"]["connected"] is False
        assert "KafkaConnectionError" in health["sources"]["kafka"]["last_error"]
        # aiokafka's own reason, which its exception leaves out, is in the status too.
        assert "Connect call failed" in health["sources"]["kafka"]["last_error"]
        broker = Tansu(tmp_path / "tansu", port=port)
        broker.start()
        # The daemon retries all along: its metadata request may create the topic first.
        broker.create_topic(topic, 1, exist_ok=True)
        late = Kcat(broker.bootstrap, tmp_path / "kcat")
        late.produce(topic, [compact({"labels": {"alertname": "BrokerCameBack"}})])
        wait_until(
            lambda: "BrokerCameBack" in titles(wk, "open"),
            DEADLINE,
            "the alert produced after the broker came up",
        )
        assert source(wk)["connected"] is True
        # The broker goes away while the daemon runs: the source notices, the daemon stays.
        broker.stop()
        gone = wait_until(
            lambda: (s := source(wk))["connected"] is False and s,
            DEADLINE,
            "the source to notice the broker is gone",
        )
        assert "cluster does not answer" in gone["last_error"]
        assert httpx.get(f"{wk.url}/healthz", timeout=5).status_code == 200
        assert wk.child is not None
        assert wk.child.running
    finally:
        wk.stop()
        if broker is not None:
            broker.stop()


def test_kill_9_mid_consumption_reflects_every_message_exactly_once(
    tansu: Tansu, kcat: Kcat, tmp_path: Path
) -> None:
    """Fire then resolve N alerts over 3 partitions; kill -9 the daemon three times midway.

    Each alert must end with exactly one AlertFired and one AlertResolved: a record applied
    twice would fire a resolved alert again (a second AlertFired), a lost one leaves none.
    """
    topic = f"crash-{uuid.uuid4().hex[:6]}"
    # A backlog large enough that what is left after each fraction takes the daemon far
    # longer to consume than one poll below: at 3,000 alerts a fast machine once consumed
    # the last 35% between two polls, and the "mid-consumption" kill landed after the end.
    partitions, alerts, poison_every = 3, 10_000, 500
    tansu.create_topic(topic, partitions)
    per_partition: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for status_ in ("firing", "resolved"):
        for i in range(alerts):
            body = {
                "version": "4",
                "status": status_,
                "alerts": [{"status": status_, "labels": {"alertname": "Crash", "seq": str(i)}}],
            }
            per_partition[i % partitions].append(compact(body))
            if status_ == "firing" and i % poison_every == 0:
                per_partition[i % partitions].append(f"poison {i}".encode())
    poison = sum(1 for i in range(alerts) if i % poison_every == 0)
    for p, batch in per_partition.items():
        kcat.produce(topic, batch, partition=p)
    total = alerts * 2 + poison

    wk = daemon(
        tmp_path / "wk",
        # No consumer group: after an unclean exit tansu holds a rejoin for ~18 s; the
        # resume path (recorded offset + 1, checked per batch) is the same in both modes.
        {
            "bootstrap_servers": tansu.bootstrap,
            "group_id": None,
            "max_batch": 20,
            "topics": [{"topic": topic, "format": "webhook"}],
        },
    )

    def applied() -> int:
        counts = status(wk)["event_counts"]
        return int(counts.get("AlertFired", 0) + counts.get("AlertResolved", 0))

    kills = []
    try:
        for fraction in (0.15, 0.4, 0.65):
            wk.start()  # returns once state is rebuilt (/readyz)
            # Past the fraction and past what the restarted daemon found recorded: after a
            # restart the backlog can run past the next fraction before the first poll, and
            # each kill must land on progress this process made (the assertions below).
            target = max(fraction * alerts * 2, applied() + 1)
            wait_for(
                lambda t=target: applied() >= t,
                timeout=DEADLINE,
                what=f"{fraction:.0%} of the alert records to be applied",
                interval=0.02,  # kill soon after the fraction, well before the end
            )
            seen = applied()
            wk.kill()
            kills.append(seen)
        wk.start()
        wait_until(
            lambda: applied() >= alerts * 2 and source(wk)["lag"] == 0,
            DEADLINE * 2,
            "every record to be applied after the last restart",
        )
        events = wk.events()
    finally:
        wk.stop()

    assert all(k < alerts * 2 for k in kills), f"every kill hit mid-consumption: {kills}"
    assert kills == sorted(set(kills)), f"three kills at rising progress: {kills}"
    fired = Counter(
        e["data"]["alert"]["labels"]["seq"] for e in events if e["type"] == "AlertFired"
    )
    resolved_fps = Counter(e["data"]["fingerprint"] for e in events if e["type"] == "AlertResolved")
    assert len(fired) == alerts, "no alert lost"
    assert set(fired.values()) == {1}, "each alert fired exactly once"
    assert len(resolved_fps) == alerts, "no resolution lost"
    assert set(resolved_fps.values()) == {1}, "each alert resolved exactly once"
    letters = [e for e in events if e["type"] == "DeadLetterRecorded"]
    assert len(letters) == poison, "each poison record dead-lettered exactly once"
    assert len({e["stream"] for e in letters}) == poison
    assert all(e["data"]["reason"].startswith("offset ") for e in letters)
    assert total == sum(len(b) for b in per_partition.values())
