"""The hot set is bounded (issue 17, High #3): alerts per incident, open incidents, alerts
in all, and the size of one alert; every stream source takes the configured limits.

Over a limit an alert is refused in the pure core with a dead letter that names the limit;
the HTTP intake answers 429 for it while the rest of the batch is held."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from domainkit import T0, mk
from test_api import running

from daemon.config.settings import Settings
from daemon.config.sources import MqttConfig
from daemon.domain import GroupingPolicy, Matcher, ReceiveAlert, World, decide
from daemon.domain.action_model import ActionBook
from daemon.domain.commands import CreateSilence
from daemon.domain.events import AlertFired, DeadLetterRecorded, IncidentOpened
from daemon.domain.limits import AlertLimits, StateLimits
from daemon.intake.payloads import decode
from daemon.intake.streams import Backoff
from daemon.runtime.wiring import build_sources
from handlers.sources.mqtt import MqttSource, _Received

SMALL = StateLimits(max_open_incidents=3, max_alerts_per_incident=4, max_alerts=10)


def world(limits: StateLimits = SMALL, group_by: tuple[str, ...] = ("alertname",)) -> World:
    return World(policy=GroupingPolicy(group_by=group_by, limits=limits))


def fire(w: World, name: str, **labels: str) -> list[Any]:
    return decide(w, ReceiveAlert(mk(name, **labels)), T0)


def test_an_incident_holds_at_most_max_alerts_per_incident() -> None:
    w = world()
    for i in range(4):
        assert [type(e) for e in fire(w, "Disk", host=f"h{i}")][-1] is AlertFired
    refused = fire(w, "Disk", host="h4")
    assert [type(e) for e in refused] == [DeadLetterRecorded]
    assert "limits.max_alerts_per_incident (4)" in refused[0].reason
    assert "Disk" in refused[0].reason
    assert '"host": "h4"' in refused[0].payload
    assert len(w.alerts) == 4
    # One already held may fire again (no more room taken), and other groups still open.
    assert fire(w, "Disk", host="h0") == []
    assert type(fire(w, "Cpu")[0]) is IncidentOpened


def test_no_incident_opens_past_max_open_incidents() -> None:
    w = world()
    for name in ("A", "B", "C"):
        fire(w, name)
    refused = fire(w, "D")
    assert [type(e) for e in refused] == [DeadLetterRecorded]
    assert "limits.max_open_incidents (3)" in refused[0].reason
    assert len(w.incidents) == 3
    # Joining an incident already open is still fine.
    assert type(fire(w, "A", host="h1")[0]) is AlertFired


def test_the_hot_set_holds_at_most_max_alerts_silenced_ones_included() -> None:
    w = world(StateLimits(max_open_incidents=100, max_alerts_per_incident=100, max_alerts=5))
    decide(
        w,
        CreateSilence(
            uuid4(),
            (Matcher.parse('alertname="Muted"'),),
            T0,
            T0 + timedelta(hours=1),
            "alice",
        ),
        T0,
    )
    for i in range(3):
        fire(w, "Muted", host=f"h{i}")
    fire(w, "Loud", host="h0")
    fire(w, "Loud", host="h1")
    assert len(w.alerts) == 5
    for name in ("Muted", "Loud", "New"):
        refused = fire(w, name, host="h9")
        assert [type(e) for e in refused] == [DeadLetterRecorded], name
        assert "limits.max_alerts (5)" in refused[0].reason
    assert len(w.alerts) == 5


def test_an_alert_refused_again_gets_one_dead_letter_an_hour() -> None:
    w = world()
    for name in ("A", "B", "C"):
        fire(w, name)
    first = fire(w, "D")
    assert [type(e) for e in first] == [DeadLetterRecorded]
    # Prometheus re-sends it every evaluation: still refused, but the log does not grow.
    assert decide(w, ReceiveAlert(mk("D")), T0 + timedelta(minutes=30)) == []
    assert "D" not in {st.alert.name for st in w.alerts.values()}
    later = decide(w, ReceiveAlert(mk("D")), T0 + timedelta(hours=1))
    assert [type(e) for e in later] == [DeadLetterRecorded]
    assert later[0].originator_id != first[0].originator_id
    # Two different alerts refused at one instant get distinct dead letters.
    ids = {fire(w, "E")[0].originator_id, fire(w, "F")[0].originator_id}
    assert len(ids) == 2


def test_one_alert_may_weigh_at_most_max_alert_bytes() -> None:
    body = b'{"labels": {"alertname": "Big", "a": "' + b"x" * 3000 + b'", "b": "' + (
        b"y" * 3000
    ) + b'"}, "annotations": {"d": "' + b"z" * 3000 + b'"}}'
    with pytest.raises(Exception, match=r"limits.max_alert_bytes \(8192\)"):
        decode("alert", body, now=T0, resolve_timeout=timedelta(minutes=5), source="t")
    roomy = AlertLimits(max_alert_bytes=20_000)
    assert decode(
        "alert", body, now=T0, resolve_timeout=timedelta(minutes=5), source="t", limits=roomy
    )


def test_stream_sources_get_the_configured_limits() -> None:
    settings = Settings.model_validate(
        {
            "limits": {"max_labels": 2},
            "sources": {
                "kafka": [
                    {
                        "bootstrap_servers": "127.0.0.1:1",
                        "topics": [{"topic": "a", "format": "alert"}],
                    }
                ],
                "mqtt": [{"subscriptions": [{"filter": "alerts/#", "format": "alert"}]}],
                "prometheus": [{"url": "http://127.0.0.1:1", "import_alerts": True}],
            },
        }
    )
    sources = build_sources(settings, None, lambda: T0)  # type: ignore[arg-type]
    assert len(sources) == 3
    for src in sources:
        assert src.limits.max_labels == 2, type(src).__name__  # type: ignore[attr-defined]


def test_mqtt_refuses_an_alert_over_its_limits_with_a_dead_letter() -> None:
    config = MqttConfig.model_validate(
        {
            "subscriptions": [
                {"filter": "alerts/#", "format": "alert", "labels": {"site": "x" * 100}}
            ]
        }
    )
    src = MqttSource(
        config,
        None,  # type: ignore[arg-type]
        lambda: T0,
        password=None,
        resolve_timeout=timedelta(minutes=5),
        backoff=Backoff(0.1, 1),
        limits=AlertLimits(max_label_value_bytes=64),
    )
    msg = _Received("alerts/a", b'{"labels": {"alertname": "A", "b": "' + b"y" * 65 + b'"}}', T0)
    (cmd,) = src._commands(msg)
    assert "max_label_value_bytes (64)" in cmd.reason  # type: ignore[union-attr]
    # A topic label past the limit is refused as well, though the payload itself is fine.
    (cmd,) = src._commands(_Received("alerts/a", b'{"labels": {"alertname": "A"}}', T0))
    assert "labels.site: value is longer" in cmd.reason  # type: ignore[union-attr]


async def test_the_api_answers_429_for_alerts_past_a_limit_and_holds_the_rest(
    tmp_path: Path,
) -> None:
    limits = {"max_open_incidents": 2, "max_alerts_per_incident": 50, "max_alerts": 100}
    async with running(tmp_path, {"limits": limits}) as d:
        r = await d.post_alerts(*({"labels": {"alertname": f"A{i}"}} for i in range(4)))
        assert r.status_code == 429, r.text
        assert "limits.max_open_incidents (2)" in r.json()["error"]
        assert len(await d.incidents()) == 2
        letters = (await d.http.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert sorted(x["payload"] for x in letters) == [
            '{"labels": {"alertname": "A2"}}',
            '{"labels": {"alertname": "A3"}}',
        ]
        # Renewing what is held is still fine.
        assert (await d.post_alerts({"labels": {"alertname": "A0"}})).status_code == 200
        # Sent again, A2 is still refused (429) without a second dead letter.
        again = await d.post_alerts({"labels": {"alertname": "A2"}})
        assert again.status_code == 429, again.text
        letters = (await d.http.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert len(letters) == 2


async def test_the_console_builds_only_the_rows_of_the_page_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    real = ActionBook.for_incident

    def counted(self: ActionBook, incident_id: UUID) -> Any:
        asked.append(incident_id)
        return real(self, incident_id)

    async with running(tmp_path, {"limits": {"page_size": 10}}) as d:
        r = await d.post_alerts(*({"labels": {"alertname": f"A{i:02d}"}} for i in range(35)))
        assert r.status_code == 200
        monkeypatch.setattr(ActionBook, "for_incident", counted)
        html = (await d.http.get("/", params={"page": 3})).text
        assert html.count('<tr class="state-') == 5
        assert len(asked) <= 10, f"built {len(asked)} rows for a page of 5"


async def test_the_whole_alert_lists_of_api_v2_are_streamed(tmp_path: Path) -> None:
    # At the hot set's limit /api/v2/alerts is ~85 MB of JSON; built whole, one poll from
    # karma or Grafana took the daemon past MemoryMax (bench/restart_memory.py).
    async with running(tmp_path) as d:
        pad = "p" * 3000
        r = await d.post_alerts(
            *({"labels": {"alertname": f"G{i % 3}", "n": str(i), "pad": pad}} for i in range(90))
        )
        assert r.status_code == 200, r.text
        r = await d.http.get("/api/v2/alerts")
        assert r.status_code == 200
        assert "content-length" not in r.headers  # sent as it is encoded, not built whole
        alerts = r.json()
        assert len(alerts) == 90
        assert {a["labels"]["n"] for a in alerts} == {str(i) for i in range(90)}
        assert alerts[0]["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
        assert alerts[0]["receivers"] == [{"name": "watchkeeper"}]
        r = await d.http.get("/api/v2/alerts/groups")
        assert "content-length" not in r.headers
        groups = r.json()
        assert sorted(g["labels"]["alertname"] for g in groups) == ["G0", "G1", "G2"]
        assert [len(g["alerts"]) for g in groups] == [30, 30, 30]
        assert groups[0]["receiver"] == {"name": "watchkeeper"}
        r = await d.http.get("/api/v2/alerts", params={"filter": 'n="7"'})
        assert [a["labels"]["n"] for a in r.json()] == ["7"]
        r = await d.http.get("/api/v2/alerts", params={"receiver": "other"})
        assert r.json() == []
