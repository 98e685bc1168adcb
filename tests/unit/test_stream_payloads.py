"""Pure parts of the stream sources: payload decoding, samples, topic templates, backoff,
and the `sources:`/`rules:` configuration with its error messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from daemon.config.settings import ConfigError, load_config
from daemon.config.sources import domain_rules
from daemon.domain.commands import ReceiveAlert, RecordDeadLetter
from daemon.domain.rule_model import ObserveSamples, Sample
from daemon.domain.topics import TopicTemplate
from daemon.intake.formats import PayloadError
from daemon.intake.payloads import coalesce, dead_letter, decode
from daemon.intake.samples import parse_samples
from daemon.intake.streams import Backoff, describe

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


# --- samples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "metric", "expected"),
    [
        (b"21.5", "temp", [("temp", {}, 21.5, NOW)]),
        (b' {"value": 3} ', "temp", [("temp", {}, 3.0, NOW)]),
        (
            b'{"metric": "rpm", "labels": {"n": 1, "ok": true}, "value": "7", "ts": 1700000000}',
            "",
            [
                (
                    "rpm",
                    {"n": "1", "ok": "true"},
                    7.0,
                    datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
                )
            ],
        ),
        (
            b'[{"metric": "a", "value": 1, "ts": 1700000000123}, {"metric": "b", "value": 2,'
            b' "ts": "2025-01-01T00:00:00Z"}]',
            "",
            [
                ("a", {}, 1.0, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
                ("b", {}, 2.0, datetime(2025, 1, 1, tzinfo=UTC)),
            ],
        ),
    ],
)
def test_sample_shapes(body: bytes, metric: str, expected: list[tuple[object, ...]]) -> None:
    got = parse_samples(body, now=NOW, metric=metric)
    assert [(s.metric, dict(s.labels), s.value, s.ts) for s in got] == expected


def test_payload_labels_win_over_topic_labels() -> None:
    (s,) = parse_samples(
        b'{"value": 1, "labels": {"site": "x"}}',
        now=NOW,
        metric="m",
        labels={"site": "topic", "device": "d"},
    )
    assert dict(s.labels) == {"site": "x", "device": "d"}


@pytest.mark.parametrize(
    ("body", "metric", "problem"),
    [
        (b"nan", "m", "value: must be a finite number"),
        (b"hello", "m", "body: expected a JSON sample, an array of samples or a bare number"),
        (b"7", "", "sample.metric: required (or put {metric} in the topic template)"),
        (b'{"value": "x"}', "m", "sample.value: Input should be a valid number"),
        (b'[{"metric": "a"}]', "", "samples[0].value: required field is missing"),
        (b'{"metric": "a", "value": 1e999}', "", "sample.value: must be a finite number"),
        (b"{bad", "m", "sample: malformed JSON"),
    ],
)
def test_bad_samples_name_the_field(body: bytes, metric: str, problem: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_samples(body, now=NOW, metric=metric)
    assert problem in str(e.value)


# --- stream payloads to commands -------------------------------------------------------------


def test_every_format_decodes_to_commands() -> None:
    webhook = (SAMPLES / "002_api_v1_webhook_alertmanager.json").read_bytes()
    (cmd,) = decode("webhook", webhook, now=NOW, resolve_timeout=LEASE, source="k")
    assert isinstance(cmd, ReceiveAlert)
    assert cmd.alert.fingerprint == "394877885937e4c3", "Alertmanager's fingerprint is kept"
    posted = decode(
        "postable",
        b'[{"labels": {"alertname": "A"}}, {"labels": {"alertname": "B"}}]',
        now=NOW,
        resolve_timeout=LEASE,
        source="k",
    )
    assert [c.alert.name for c in posted] == ["A", "B"]  # type: ignore[union-attr]
    assert posted[0].alert.ends_at == NOW + LEASE  # type: ignore[union-attr]
    (single,) = decode(
        "alert",
        b'{"labels": {"alertname": "S"}}',
        now=NOW,
        resolve_timeout=LEASE,
        source="k",
        labels={"site": "s1"},
    )
    assert isinstance(single, ReceiveAlert)
    assert single.alert.labels == {"alertname": "S", "site": "s1"}
    (samples,) = decode("samples", b"4", now=NOW, resolve_timeout=LEASE, source="m", metric="t")
    assert isinstance(samples, ObserveSamples)
    assert samples.samples[0].value == 4.0


@pytest.mark.parametrize(
    ("fmt", "body", "problem"),
    [
        ("webhook", b'{"version": "3", "alerts": []}', "expected webhook payload version 4"),
        ("postable", b'[{"labels": {}}]', "alerts[0].labels: an alertname label is required"),
        ("alert", b"{nope", "alert: malformed JSON"),
        (
            "alert",
            b'{"labels": {"alertname": "x"}, "startsAt": "2025-01-02T00:00:00Z",'
            b' "endsAt": "2025-01-01T00:00:00Z"}',
            "endsAt: is before startsAt",
        ),
        # A lone surrogate escape cannot be stored (the commit would fail on every retry and
        # wedge the partition): refused up front, in either alert shape.
        (
            "alert",
            b'{"status": "firing", "labels": {"alertname": "x\\udcff"}}',
            "lone leading surrogate",
        ),
        ("alert", b'{"labels": {"alertname": "x\\udcff"}}', "lone leading surrogate"),
        (
            "webhook",
            b'{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "x"},'
            b' "annotations": {"s": "\\ud800"}}]}',
            "malformed JSON",
        ),
    ],
)
def test_unreadable_alert_payloads(fmt: str, body: bytes, problem: str) -> None:
    with pytest.raises(PayloadError) as e:
        decode(fmt, body, now=NOW, resolve_timeout=LEASE, source="k")  # type: ignore[arg-type]
    assert problem in str(e.value)


def test_dead_letter_keeps_the_head_and_the_size() -> None:
    body = b"x" * 10_000
    d = dead_letter(UUID(int=7), "kafka:t", ["one", "two"], body)
    assert isinstance(d, RecordDeadLetter)
    assert d.reason == "one; two"
    assert d.size == 10_000
    assert len(d.payload) == 4096


def test_coalesce_merges_sample_runs_in_order() -> None:
    s1 = ObserveSamples((Sample("m", {}, 1.0, NOW),), "src")
    s2 = ObserveSamples((Sample("m", {}, 2.0, NOW),), "src")
    letter = dead_letter(UUID(int=1), "src", ["bad"], b"?")
    out = coalesce([s1, s2, letter, s1])
    assert [type(c).__name__ for c in out] == [
        "ObserveSamples",
        "RecordDeadLetter",
        "ObserveSamples",
    ]
    assert [s.value for s in out[0].samples] == [1.0, 2.0]  # type: ignore[union-attr]


# --- topic templates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "labels"),
    [
        ("sites/lab1/d1/temperature", {"site": "lab1", "device": "d1", "metric": "temperature"}),
        ("sites/lab1/d1", None),
        ("other/lab1/d1/t", None),
        ("sites//d1/t", None),
    ],
)
def test_topic_template_match(topic: str, labels: dict[str, str] | None) -> None:
    assert TopicTemplate.parse("sites/{site}/{device}/{metric}").match(topic) == labels


@pytest.mark.parametrize(
    ("template", "filter_", "problem"),
    [
        ("sites/{site}/{metric}", "sites/+/+", ""),
        ("sites/{site}/{metric}", "sites/#", ""),
        ("sites/{site}/{metric}", "sites/+/+/+", "has 4 levels"),
        ("sites/{site}/{metric}", "plant/+/+", "can never equal"),
    ],
)
def test_template_against_filter(template: str, filter_: str, problem: str) -> None:
    got = TopicTemplate.parse(template).conflicts_with(filter_)
    assert (problem in got) if problem else got == ""


@pytest.mark.parametrize("bad", ["sites/{site}x", "a/{x}/{x}", "a/+/b"])
def test_bad_templates(bad: str) -> None:
    with pytest.raises(ValueError, match="template level"):
        TopicTemplate.parse(bad)


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    low = Backoff(1.0, 8.0, rand=lambda: 0.0)
    assert [low.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(1.0, 8.0, rand=lambda: 1.0)
    assert [high.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    high.reset()
    assert high.next() == 1.0


# --- configuration ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    return e.value.problems


def test_existing_configs_stay_valid(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, "store: sqlite:///x.db\n"))
    assert s.sources.kafka == []
    assert s.rules == []


def test_full_stack_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", "pw")
    monkeypatch.setenv("PROMETHEUS_AUTH", "Bearer t")
    monkeypatch.setenv("KAFKA_PASSWORD", "pw")
    s = load_config(Path(__file__).resolve().parents[2] / "examples" / "full-stack.yaml")
    kinds = sorted(r.kind for r in domain_rules(s.rules, s.sources))
    assert {"threshold", "absence", "query"} <= set(kinds)
    assert len(s.sources.kafka) == len(s.sources.mqtt) == len(s.sources.prometheus) == 1


def test_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
sources:
  kafka:
    - bootstrap_servers: 127.0.0.1:9092
      topics: [{topic: a, format: postable}, {topic: b, format: avro}]
    - name: other
      bootstrap_servers: 127.0.0.1:9092
      security_protocol: SASL_SSL
      topics: [{topic: a, format: postable}]
  mqtt:
    url: http://broker
    subscriptions:
      - {filter: "sites/+/+/+", template: "sites/{site}/{device}", format: samples}
  prometheus:
    url: http://127.0.0.1:9090
rules:
  - {alert: Hot, metric: t, condition: 80}
  - {alert: Cold, metric: t, condition: "< 5", clear: 1}
  - {alert: Both, metric: t, condition: "> 1", absent_for: 1m}
""",
    )
    text = "\n".join(got)
    assert (
        "sources.kafka[0].topics[1].format: "
        "Input should be 'webhook', 'postable', 'alert' or 'samples'" in text
    )
    assert "sources.kafka[1]: security_protocol SASL_SSL needs sasl_mechanism" in text
    assert "sources.mqtt[0].url: expected mqtt://host:port" in text
    assert "has 4 levels, template 'sites/{site}/{device}' has 3" in text
    assert "sources.prometheus[0]: nothing to do: add rules or set import_alerts: true" in text
    assert 'rules[0].condition: expected a comparison and a number such as "> 80", got 80' in text
    assert "rules[1]: clear (1.0) must not be below threshold for <" in text
    assert "rules[2]: a rule needs exactly one of condition: (threshold) or absent_for:" in text


def test_rule_names_unique_across_rules_and_prometheus(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
sources:
  prometheus:
    rules: [{alert: Hot, expr: "up == 0"}]
rules:
  - {alert: Hot, metric: t, condition: "> 1"}
""",
    )
    assert got == [
        "sources.prometheus[0].rules[0].name: rule name 'Hot' is already used by rules[0]; "
        "give one of them a distinct name:"
    ]


def test_one_topic_name_one_kafka_source(tmp_path: Path) -> None:
    # Positions are kept as kafka:<topic>:<partition>; a second cluster's topic of the same
    # name would share them, so the config says so instead of skipping records.
    got = problems(
        tmp_path,
        """
sources:
  kafka:
    - {bootstrap_servers: "127.0.0.1:9092", topics: [{topic: alerts, format: alert}]}
    - name: dr
      bootstrap_servers: "127.0.0.1:9093"
      topics: [{topic: alerts, format: alert}]
""",
    )
    assert len(got) == 1
    assert "kafka topic 'alerts' is read by both 'kafka' and 'dr'" in got[0]
    assert got[0].startswith("sources")


def test_unresolvable_source_secret(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
sources:
  mqtt:
    password: env:WK_TEST_SURELY_UNSET
    subscriptions: [{filter: "a/#", format: alert}]
""",
    )
    assert got == ["sources.mqtt[0].password: environment variable WK_TEST_SURELY_UNSET is not set"]


class KafkaConnectionError(Exception):
    def __str__(self) -> str:
        return "KafkaConnectionError: Unable to bootstrap"


def test_errors_are_described_with_their_type_once() -> None:
    assert describe(OSError("refused")) == "OSError: refused"
    assert describe(KafkaConnectionError()) == "KafkaConnectionError: Unable to bootstrap"
    assert describe(TimeoutError()) == "TimeoutError"
