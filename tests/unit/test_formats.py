"""Payload parsing against what Prometheus 2.42 and Alertmanager 0.25 really send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.domain import alert_model as alerts
from daemon.domain.alert_model import fingerprint
from daemon.intake.formats import (
    PayloadError,
    parse_postable_alerts,
    parse_single_alert,
    parse_webhook,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "samples"
# The samples were captured at 23:27:05.928Z; their v2 leases run to :09.928 or :11.928.
NOW = datetime(2026, 11, 28, 23, 27, 6, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def sample(name: str) -> str:
    return (FIXTURES / name).read_text()


def parse_any(path: Path, now: datetime = NOW) -> list[Any]:
    body = path.read_bytes()
    if "webhook" in path.name:
        return parse_webhook(body, now=now)
    return parse_postable_alerts(body, now=now, resolve_timeout=LEASE)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_every_sample_parses(path: Path) -> None:
    alerts = parse_any(path)
    raw = json.loads(path.read_text())
    items = raw if isinstance(raw, list) else raw["alerts"]
    assert len(alerts) == len(items) >= 1
    for alert, item in zip(alerts, items, strict=True):
        assert alert.labels == item["labels"]
        assert alert.annotations == item.get("annotations", {})
        assert alert.starts_at == datetime(2026, 11, 28, 23, 27, 5, 928000, tzinfo=UTC)
        assert alert.generator_url == item["generatorURL"]
        assert len(alert.fingerprint) == 16


def test_every_shared_sample_parses() -> None:
    """The live capture directory, when this checkout sits next to it (CI and dev hosts)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present (the fixtures hold copies)")
    paths = sorted(SHARED.glob("*.json"))
    assert paths
    for path in paths:
        assert parse_any(path), path.name
        copy = FIXTURES / path.name
        assert copy.read_text() == path.read_text(), f"{copy} is out of date"


def test_v2_alert_with_lease_from_prometheus() -> None:
    [alert] = parse_postable_alerts(
        sample("000_api_v2_alerts.json"), now=NOW, resolve_timeout=LEASE
    )
    assert alert.status == "firing"
    assert alert.ends_at == datetime(2026, 11, 28, 23, 27, 9, 928000, tzinfo=UTC)
    assert alert.fingerprint == "394877885937e4c3"
    assert alert.source == "api_v2"


def test_v2_alert_without_ends_at_gets_a_lease_of_resolve_timeout() -> None:
    raw = json.loads(sample("000_api_v2_alerts.json"))
    del raw[0]["endsAt"]
    del raw[0]["startsAt"]
    [alert] = parse_postable_alerts(json.dumps(raw), now=NOW, resolve_timeout=LEASE)
    assert alert.status == "firing"
    assert alert.starts_at == NOW
    assert alert.ends_at == NOW + LEASE


def test_v2_alert_with_ends_at_passed_is_resolved() -> None:
    later = datetime(2026, 11, 28, 23, 27, 10, tzinfo=UTC)
    [alert] = parse_postable_alerts(
        sample("010_api_v2_alerts.json"), now=later, resolve_timeout=LEASE
    )
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2026, 11, 28, 23, 27, 9, 928000, tzinfo=UTC)


def test_webhook_firing_keeps_alertmanagers_fingerprint_and_has_no_lease() -> None:
    [alert] = parse_webhook(sample("002_api_v1_webhook_alertmanager.json"), now=NOW)
    assert alert.status == "firing"
    assert alert.fingerprint == "394877885937e4c3"
    # Go's zero time means "no end": Alertmanager announces the resolution itself.
    assert alert.ends_at is None
    assert alert.source == "alertmanager"


def test_webhook_fingerprint_must_be_its_labels_own() -> None:
    # Issue 17: a fingerprint taken as given let one alert resolve another's incident.
    raw = json.loads(sample("003_api_v1_webhook_alertmanager.json"))
    [alert] = parse_webhook(json.dumps(raw), now=NOW)
    assert alert.fingerprint == raw["alerts"][0]["fingerprint"]
    raw["alerts"][0]["fingerprint"] = "00000000000000ff"
    with pytest.raises(PayloadError, match="is not the fingerprint of its labels"):
        parse_webhook(json.dumps(raw), now=NOW)


def test_webhook_resolved() -> None:
    [alert] = parse_webhook(sample("008_api_v1_webhook_alertmanager.json"), now=NOW)
    assert alert.status == "resolved"
    assert alert.fingerprint == "394877885937e4c3"
    assert alert.ends_at == datetime(2026, 11, 28, 23, 27, 9, 928000, tzinfo=UTC)


def test_webhook_unknown_fields_are_ignored() -> None:
    raw = json.loads(sample("002_api_v1_webhook_alertmanager.json"))
    raw["futureField"] = {"nested": [1, 2]}
    raw["alerts"][0]["silencedBy"] = ["x"]
    [alert] = parse_webhook(json.dumps(raw), now=NOW)
    assert alert.fingerprint == "394877885937e4c3"


def test_single_alert_in_either_shape() -> None:
    webhook_alert = json.loads(sample("002_api_v1_webhook_alertmanager.json"))["alerts"][0]
    a = parse_single_alert(webhook_alert, now=NOW, resolve_timeout=LEASE, source="kafka")
    assert (a.fingerprint, a.ends_at, a.source) == ("394877885937e4c3", None, "kafka")
    postable = {"labels": {"alertname": "DiskFull"}}
    b = parse_single_alert(postable, now=NOW, resolve_timeout=LEASE, source="mqtt")
    assert (b.status, b.ends_at) == ("firing", NOW + LEASE)


V2 = "v2"
WEBHOOK = "webhook"


def _webhook_with(**changes: Any) -> str:
    raw = json.loads(sample("002_api_v1_webhook_alertmanager.json"))
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        if value is None:
            del target[int(leaf) if leaf.isdigit() else leaf]
        else:
            target[leaf] = value
    return json.dumps(raw)


BAD: list[tuple[str, str, str, str]] = [
    ("malformed json", V2, '[{"labels": {"alertname": "X"}', "alerts: malformed JSON"),
    ("not an array", V2, '{"labels": {"alertname": "X"}}', "alerts: Input should be a valid array"),
    (
        "wrong label type",
        V2,
        '[{"labels": {"alertname": "X", "replica": 3}}]',
        "alerts[0].labels.replica: Input should be a valid string",
    ),
    (
        "wrong time type",
        V2,
        '[{"labels": {"alertname": "X"}, "startsAt": "yesterday"}]',
        "alerts[0].startsAt: Input should be a valid datetime",
    ),
    ("missing labels", V2, '[{"annotations": {}}]', "alerts[0].labels: required field is missing"),
    (
        "missing alertname",
        V2,
        '[{"labels": {"alertname": "A"}}, {"labels": {"job": "x"}}]',
        "alerts[1].labels: an alertname label is required",
    ),
    (
        "empty alertname",
        V2,
        '[{"labels": {"alertname": ""}}]',
        "alerts[0].labels: an alertname label is required",
    ),
    (
        "ends before it starts",
        V2,
        '[{"labels": {"alertname": "X"}, "startsAt": "2026-11-28T23:27:05Z",'
        ' "endsAt": "2026-11-28T23:27:00Z"}]',
        "alerts[0].endsAt: is before startsAt",
    ),
    ("webhook malformed json", WEBHOOK, '{"alerts": [', "body: malformed JSON"),
    (
        "webhook version 3",
        WEBHOOK,
        _webhook_with(version="3"),
        "version: expected webhook payload version 4, got '3'",
    ),
    (
        "webhook without alerts",
        WEBHOOK,
        _webhook_with(alerts=None),
        "alerts: required field is missing",
    ),
    (
        "webhook alert without status",
        WEBHOOK,
        _webhook_with(alerts__0__status=None),
        "alerts[0].status: required field is missing",
    ),
    (
        "webhook unknown status",
        WEBHOOK,
        _webhook_with(alerts__0__status="pending"),
        "alerts[0].status: Input should be 'firing' or 'resolved'",
    ),
    (
        "webhook labels not a mapping",
        WEBHOOK,
        _webhook_with(alerts__0__labels=["alertname"]),
        "alerts[0].labels: Input should be an object",
    ),
    (
        "webhook missing alertname",
        WEBHOOK,
        _webhook_with(alerts__0__labels={"job": "x"}),
        "alerts[0].labels: an alertname label is required",
    ),
    (
        "webhook ends before it starts",
        WEBHOOK,
        _webhook_with(alerts__0__status="resolved", alerts__0__endsAt="2026-11-28T23:00:00Z"),
        "alerts[0].endsAt: is before startsAt",
    ),
]


@pytest.mark.parametrize(("kind", "body", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_payloads_name_the_problem_and_its_path(kind: str, body: str, problem: str) -> None:
    def parse() -> object:
        if kind == V2:
            return parse_postable_alerts(body, now=NOW, resolve_timeout=LEASE)
        return parse_webhook(body, now=NOW)

    with pytest.raises(PayloadError) as caught:
        parse()
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert problem in str(caught.value)


def test_every_problem_is_reported() -> None:
    body = '[{"labels": {"job": "x"}}, {"annotations": {}}, {"labels": {"alertname": 1}}]'
    with pytest.raises(PayloadError) as caught:
        parse_postable_alerts(body, now=NOW, resolve_timeout=LEASE)
    paths = [p.split(":")[0] for p in caught.value.problems]
    assert paths == ["alerts[0].labels", "alerts[1].labels", "alerts[2].labels.alertname"]


def test_single_alert_problems_name_the_path() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_single_alert({"labels": {}}, now=NOW, resolve_timeout=LEASE, source="kafka")
    assert any(p.startswith("alert.labels:") for p in caught.value.problems), caught.value.problems


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=24), max_size=8))
def test_fingerprint_is_fnv1a_64_over_sorted_labels(labels: dict[str, str]) -> None:
    # Alertmanager's model.LabelsToSignature: name 0xff value 0xff per pair, sorted by name.
    data = b"".join(n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in sorted(labels.items()))
    assert fingerprint(labels) == f"{alerts.fnv1a_64_py(data):016x}"


def test_fingerprints_use_the_c_fnv() -> None:
    # The Python byte loop is only a fallback; intake speed depends on the C one loading.
    assert alerts.fnv1a_64 is not alerts.fnv1a_64_py
    assert alerts.fnv1a_64(b"Hello") == alerts.fnv1a_64_py(b"Hello") == 7201466553693376363
